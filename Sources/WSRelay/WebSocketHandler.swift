import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOWebSocket
import ChatCore

/// What every socket handler shares.
struct RelayContext: Sendable {
    let relayID: String
    let presence: Presence
    let jwt: JWTSigner
    let sessions: ObjectPool<RedisConnection>
    let db: ObjectPool<PostgresConnection>
    let blocking: NIOThreadPool
    let hub: Hub
    let authTimeout: TimeAmount
    let idleTimeout: TimeAmount
    let maxMessageBytes: Int
    /// One heartbeat sweep per event loop (not a timer per socket).
    let heartbeats: LoopHeartbeats
}

/// The sockets of each event loop, pinged (and closed when silent) by one repeated task per
/// loop: a per-socket RepeatedTask cost about half a KiB of every idle connection.
/// `@unchecked Sendable`: each loop's set is only touched on that loop.
final class LoopHeartbeats: @unchecked Sendable {
    private final class Sockets: @unchecked Sendable {
        var handlers: [ObjectIdentifier: WebSocketHandler] = [:]
    }
    private let byLoop: [ObjectIdentifier: Sockets]

    init(group: EventLoopGroup, interval: TimeAmount) {
        var byLoop: [ObjectIdentifier: Sockets] = [:]
        for loop in group.makeIterator() {
            let sockets = Sockets()
            byLoop[ObjectIdentifier(loop)] = sockets
            loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                for handler in Array(sockets.handlers.values) { handler.heartbeat() }
            }
        }
        self.byLoop = byLoop
    }

    func add(_ handler: WebSocketHandler, on loop: EventLoop) {
        loop.preconditionInEventLoop()
        byLoop[ObjectIdentifier(loop)]?.handlers[ObjectIdentifier(handler)] = handler
    }

    func remove(_ handler: WebSocketHandler, on loop: EventLoop) {
        loop.preconditionInEventLoop()
        byLoop[ObjectIdentifier(loop)]?.handlers[ObjectIdentifier(handler)] = nil
    }
}

/// One WebSocket connection, confined to its event loop. The first frame must
/// authenticate (JWT, then the session in Redis); after `ready` the relay pushes events
/// and answers pings. Unknown or malformed frames get an error frame and the socket
/// stays open; a message over 16 KiB closes it with 1009.
final class WebSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    enum State {
        case awaitingAuth
        case authenticating
        case ready(userID: String)
        case closing
    }

    private let ctx: RelayContext
    private static let logger = Logger(label: "relay.ws")
    private var logger: Logger { WebSocketHandler.logger }
    private var state = State.awaitingAuth
    private var channel: Channel?
    /// The frame encoder's context: a pre-encoded event frame written from it goes
    /// straight to the socket (the encoder itself is skipped; see Hub.deliver).
    private var rawWriter: ChannelHandlerContext?
    private var client: RelayClient?
    /// Event frames that arrived between subscribing and sending `ready`.
    private var pending: [ByteBuffer] = []
    private var fragments: ByteBuffer?
    private var fragmentOpcode: WebSocketOpcode = .text
    private var lastHeard = NIODeadline.now()
    private var authTimer: Scheduled<Void>?
    private var beating = false

    init(context: RelayContext) { self.ctx = context }

    func handlerAdded(context: ChannelHandlerContext) {
        channel = context.channel
        rawWriter = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        authTimer = context.eventLoop.scheduleTask(in: ctx.authTimeout) {
            if case .awaitingAuth = me.value.state { me.value.closeWith(code: RelayCloseCode.unauthorized, reason: "no auth frame") }
            // A valid auth frame whose checks or subscriptions are still pending (a busy
            // relay or broker) is not the client's fault: try again later, not "sign in again".
            if case .authenticating = me.value.state { me.value.closeWith(code: RelayCloseCode.tryAgainLater, reason: "relay busy") }
        }
        ctx.heartbeats.add(self, on: context.eventLoop)
        beating = true
    }

    func handlerRemoved(context: ChannelHandlerContext) { teardown() }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    private func teardown() {
        authTimer?.cancel()
        authTimer = nil
        rawWriter = nil
        if beating, let channel {
            beating = false
            ctx.heartbeats.remove(self, on: channel.eventLoop)
        }
        if let client {
            let (last, rooms) = ctx.hub.unsubscribe(client)
            self.client = nil
            if last { userLeftRelay(client.userID, rooms: rooms) }
        }
        state = .closing
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The socket's outbound buffer passed its high-water mark: this reader is too slow.
        // Dropping it bounds the relay's memory; the client reconnects and resumes by seq.
        if !context.channel.isWritable {
            closeWith(code: RelayCloseCode.tryAgainLater, reason: "reader too slow")
        }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        lastHeard = .now()
        if case .closing = state {
            // The peer's answer to our close frame completes the closing handshake.
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        }
        // RFC 6455 5.1 and 5.2: a client's frames are masked, and no extension was agreed,
        // so the reserved bits are zero. Either broken rule fails the connection (1002).
        guard frame.maskKey != nil else { return protocolError("unmasked client frame") }
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else { return protocolError("reserved bits set") }
        switch frame.opcode {
        case .ping:
            send(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
        case .pong:
            break
        case .connectionClose:
            // Echo the peer's code; a payload of one byte, a code no endpoint may send
            // (RFC 6455 7.4) or a reason that is not UTF-8 is a protocol error.
            var data = frame.unmaskedData
            guard data.readableBytes != 1 else { return protocolError("bad close frame") }
            guard let raw = data.readInteger(as: UInt16.self) else { return closeWith(code: 1000, reason: "") }
            let valid = (1000...1003).contains(raw) || (1007...1014).contains(raw) || (3000...4999).contains(raw)
            guard valid, String(validating: data.readableBytesView, as: UTF8.self) != nil else {
                return protocolError("bad close code")
            }
            closeWith(code: raw, reason: "")
        case .text, .binary:
            if frame.fin {
                guard fragments == nil else { return protocolError("new message inside a fragmented one") }
                message(frame.opcode, frame.unmaskedData)
            } else {
                guard fragments == nil else { return protocolError("new message inside a fragmented one") }
                guard frame.unmaskedData.readableBytes <= ctx.maxMessageBytes else {
                    return closeWith(code: RelayCloseCode.messageTooLarge, reason: "message over 16 KiB")
                }
                fragments = frame.unmaskedData
                fragmentOpcode = frame.opcode
            }
        case .continuation:
            guard var buffer = fragments else { return protocolError("continuation without a start") }
            var data = frame.unmaskedData
            buffer.writeBuffer(&data)
            guard buffer.readableBytes <= ctx.maxMessageBytes else {
                return closeWith(code: RelayCloseCode.messageTooLarge, reason: "message over 16 KiB")
            }
            if frame.fin {
                fragments = nil
                message(fragmentOpcode, buffer)
            } else {
                fragments = buffer
            }
        default:
            protocolError("unknown opcode")
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A frame the decoder refused (over 16 KiB, or malformed): close with the matching
        // code. The decoder drops the rest of the input; lingering until the peer's close
        // (instead of closing at once with unread bytes) avoids a TCP reset that would
        // destroy our close frame before the client reads it.
        if let wsError = error as? NIOWebSocketError {
            let code: UInt16 = wsError == .invalidFrameLength ? RelayCloseCode.messageTooLarge
                : UInt16(webSocketErrorCode: .protocolError)
            closeWith(code: code, reason: code == RelayCloseCode.messageTooLarge ? "frame over 16 KiB" : "protocol error")
        } else {
            logger.debug("socket error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    private func protocolError(_ why: String) {
        closeWith(code: UInt16(webSocketErrorCode: .protocolError), reason: why)
    }

    private func message(_ opcode: WebSocketOpcode, _ data: ByteBuffer) {
        guard data.readableBytes <= ctx.maxMessageBytes else {
            return closeWith(code: RelayCloseCode.messageTooLarge, reason: "message over 16 KiB")
        }
        // A text message must be UTF-8 (RFC 6455 8.1): otherwise 1007.
        if opcode == .text, String(validating: data.readableBytesView, as: UTF8.self) == nil {
            return closeWith(code: RelayCloseCode.invalidPayload, reason: "text frame is not UTF-8")
        }
        guard opcode == .text, let text = data.getString(at: data.readerIndex, length: data.readableBytes) else {
            if case .awaitingAuth = state { return closeWith(code: RelayCloseCode.unauthorized, reason: "the first frame must be auth") }
            return sendError("unsupported_frame", "Frames are JSON text frames.")
        }
        let parsed = ClientFrame.parse(text)
        switch state {
        case .awaitingAuth:
            guard case .auth(let token) = parsed else {
                return closeWith(code: RelayCloseCode.unauthorized, reason: "the first frame must be auth")
            }
            authenticate(token)
        case .authenticating:
            sendError("not_ready", "Wait for the ready frame.")
        case .ready:
            switch parsed {
            case .ping: sendJSON(#"{"type":"pong"}"#)
            case .auth: sendError("already_authenticated", "This socket is already authenticated.")
            case .typing(let roomID):
                guard let client, ctx.hub.isSubscribed(client, to: "room." + roomID) else {
                    return sendError("not_a_member", "You are not a member of this room.")
                }
                let event = "{\"type\":\"typing\",\"room_id\":\(JSON.quote(roomID)),\"user_id\":\(JSON.quote(client.userID))}"
                ctx.hub.bridge.publish(key: "room." + roomID, event: "typing", user: client.userID, body: Array(event.utf8))
            case .invalid(let code, let message): sendError(code, message)
            }
        case .closing:
            break
        }
    }

    struct RoomState: Sendable { let roomID: String; let lastSeq: Int64 }

    private func authenticate(_ token: String) {
        guard let claims = try? ctx.jwt.verify(token) else {
            return closeWith(code: RelayCloseCode.unauthorized, reason: "invalid token")
        }
        state = .authenticating
        guard let channel else { return }
        let me = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let (sessions, db, queue) = (ctx.sessions, ctx.db, ctx.hub.bridge.queueName)
        // hiredis and libpq block: run the lookups on the blocking pool, never on the loop.
        ctx.blocking.runIfActive(eventLoop: channel.eventLoop) { () throws -> [RoomState]? in
            let owner = try sessions.with { redis -> String? in
                let owner = try SessionStore(redis: redis, ttlSeconds: 0).userID(of: claims.sid)
                if owner == claims.sub {
                    // Lets the API bind this relay's queue to rooms the user joins later.
                    try redis.pipeline([["SADD", "relay_queues:" + claims.sub, queue], ["EXPIRE", "relay_queues:" + claims.sub, 7 * 86400]])
                }
                return owner
            }
            guard owner == claims.sub else { return nil }
            return try db.with { db in
                try db.query("""
                    SELECT m.room_id::text AS room_id, r.last_seq FROM room_members m JOIN rooms r ON r.id = m.room_id
                    WHERE m.user_id = $1 ORDER BY r.created_at
                    """, [claims.sub]).map { RoomState(roomID: try $0.string("room_id"), lastSeq: try $0.int("last_seq")) }
            }
        }.whenComplete { result in
            let handler = me.value
            switch result {
            case .success(let rooms?):
                handler.subscribe(userID: claims.sub, sessionID: claims.sid, rooms: rooms)
            case .success(nil):
                handler.closeWith(code: RelayCloseCode.unauthorized, reason: "session revoked or expired")
            case .failure:
                handler.closeWith(code: RelayCloseCode.tryAgainLater, reason: "sessions unavailable")
            }
        }
    }

    private func subscribe(userID: String, sessionID: String, rooms: [RoomState]) {
        guard case .authenticating = state, let channel else { return }
        let client = RelayClient(channel: channel, userID: userID, handler: self)
        self.client = client
        let me = NIOLoopBound(self, eventLoop: channel.eventLoop)
        let keys = ["user." + userID, "session." + sessionID] + rooms.map { "room." + $0.roomID }
        let roomsJSON = rooms.map { "{\"room_id\":\(JSON.quote($0.roomID)),\"last_seq\":\($0.lastSeq)}" }.joined(separator: ",")
        let ctx = self.ctx
        ctx.hub.subscribe(client, keys: keys) { ok in
            channel.eventLoop.execute {
                let handler = me.value
                guard case .authenticating = handler.state else { return }
                guard ok else { return handler.closeWith(code: RelayCloseCode.tryAgainLater, reason: "broker unavailable") }
                handler.state = .ready(userID: userID)
                handler.authTimer?.cancel()
                handler.authTimer = nil
                handler.sendJSON("{\"type\":\"ready\",\"user_id\":\(JSON.quote(userID)),\"rooms\":[\(roomsJSON)]}")
                for frame in handler.pending { handler.sendRaw(frame) }
                handler.pending = []
            }
            // Each socket taken renews the relay's claim; only the one that made the user
            // online announces it. A refused socket claims nothing, so room-mates see no
            // online/offline flicker while a client retries against a relay that refuses.
            if ok {
                let roomKeys = rooms.map { "room." + $0.roomID }
                ctx.blocking.submit { _ in
                    do {
                        guard try ctx.sessions.with({ try ctx.presence.claim($0, user: userID) }) else { return }
                        ctx.hub.bridge.publish(keys: roomKeys, event: "presence", user: userID, body: Presence.event(user: userID, status: "online"))
                    } catch {
                        // Redis down: the next refresh claims the user, unannounced.
                        WebSocketHandler.logger.warning("presence claim failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    /// The user's last socket on this relay closed: drop the relay's claims.
    private func userLeftRelay(_ userID: String, rooms: [String]) {
        let ctx = self.ctx
        let queue = ctx.hub.bridge.queueName
        ctx.blocking.submit { _ in
            do {
                let offline = try ctx.sessions.with { redis -> Bool in
                    try redis.command("SREM", "relay_queues:" + userID, queue)
                    return try ctx.presence.release(redis, user: userID)
                }
                guard offline else { return }
                ctx.hub.bridge.publish(keys: rooms, event: "presence", user: userID, body: Presence.event(user: userID, status: "offline"))
            } catch {
                // Redis down: the claim lapses after PRESENCE_TTL_SECONDS, unannounced.
                WebSocketHandler.logger.warning("presence release failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// An event from the broker for this socket (already on the loop), as a whole
    /// WebSocket frame encoded once for all its sockets (Hub.deliver). Written but not
    /// flushed; returns whether a flush is due (the outbox flushes once per batch).
    func deliver(frame: ByteBuffer, closeAfter: UInt16?) -> Bool {
        switch state {
        case .ready:
            sendRaw(frame, flush: false)
            if let code = closeAfter { closeWith(code: code, reason: "session revoked") }
            return true
        case .authenticating:
            pending.append(frame)
            if let code = closeAfter { closeWith(code: code, reason: "session revoked") }
            return false
        default:
            return false
        }
    }

    func flush() {
        guard let channel, channel.isActive, let rawWriter else { return }
        rawWriter.flush()
    }

    /// Writes an encoded frame below the frame encoder (frames written through `send`
    /// pass the encoder synchronously on this loop, so the order of the two is kept).
    /// `rawWriter` exists from the upgrade until teardown, after which the socket is closing
    /// and takes no more events.
    private func sendRaw(_ frame: ByteBuffer, flush: Bool = true) {
        guard let channel, channel.isActive, let rawWriter else { return }
        rawWriter.write(NIOAny(frame), promise: nil)
        if flush { rawWriter.flush() }
    }

    func heartbeat() {
        if case .closing = state { return }
        if NIODeadline.now() - lastHeard > ctx.idleTimeout {
            return closeWith(code: UInt16(webSocketErrorCode: .goingAway), reason: "idle")
        }
        send(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer()))
    }

    private func sendJSON(_ text: String) {
        send(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text)))
    }

    private func sendError(_ code: String, _ message: String) {
        sendJSON("{\"type\":\"error\",\"code\":\(JSON.quote(code)),\"message\":\(JSON.quote(message))}")
    }

    private func send(_ frame: WebSocketFrame) {
        guard let channel, channel.isActive else { return }
        channel.writeAndFlush(frame, promise: nil)
    }

    /// Sends a close frame with `code` and closes the socket once it is written.
    func closeWith(code: UInt16, reason: String) {
        if case .closing = state { return }
        state = .closing
        guard let channel else { return }
        var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code)
        data.writeString(String(reason.prefix(120)))
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data), promise: nil)
        teardown()
        // Wait briefly for the peer's close frame (see channelRead), then close regardless.
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }
}

extension UInt16 {
    init(webSocketErrorCode code: WebSocketErrorCode) {
        var buffer = ByteBuffer()
        buffer.write(webSocketErrorCode: code)
        self = buffer.readInteger(as: UInt16.self) ?? 1000
    }
}
