import Foundation
import NIOCore
import NIOConcurrencyHelpers
import ChatCore

/// A live, authenticated socket as the rest of the relay sees it. Everything that touches
/// the handler hops onto the socket's event loop.
final class RelayClient: Sendable, Hashable {
    let channel: Channel
    let userID: String
    private let handler: NIOLoopBound<WebSocketHandler>

    init(channel: Channel, userID: String, handler: WebSocketHandler) {
        self.channel = channel
        self.userID = userID
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    /// On the client's event loop only (LoopOutbox.drain). Writes without flushing;
    /// returns whether the socket has something to flush.
    func writeOnLoop(_ frame: ByteBuffer, closeAfter: UInt16?) -> Bool {
        handler.value.deliver(frame: frame, closeAfter: closeAfter)
    }

    func flushOnLoop() { handler.value.flush() }

    func close(code: UInt16, reason: String) {
        let handler = self.handler
        channel.eventLoop.execute { handler.value.closeWith(code: code, reason: reason) }
    }

    static func == (a: RelayClient, b: RelayClient) -> Bool { a === b }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

/// The relay's routing table: routing key -> sockets, with broker bind/unbind on the
/// first/last socket of a key, and user -> sockets for membership changes, typing and
/// presence. Events are serialized once (the broker's body is the frame) and the same
/// buffer is written to every socket.
final class Hub: Sendable {
    struct State {
        var registry = SubscriptionRegistry<RelayClient>()
        var byUser: [String: Set<RelayClient>] = [:]
    }

    private let state = NIOLockedValueBox(State())
    let bridge: AMQPBridge
    private let outboxes: [ObjectIdentifier: LoopOutbox]

    init(bridge: AMQPBridge, group: EventLoopGroup) {
        self.bridge = bridge
        var outboxes: [ObjectIdentifier: LoopOutbox] = [:]
        for loop in group.makeIterator() { outboxes[ObjectIdentifier(loop)] = LoopOutbox(loop: loop) }
        self.outboxes = outboxes
    }

    /// Registers the client for `keys`; `done(ok)` runs once the broker bindings exist.
    func subscribe(_ client: RelayClient, keys: [String], done: @escaping @Sendable (Bool) -> Void) {
        // Computed and enqueued under the lock so binds and unbinds of one key reach the
        // broker in the order of the registry's transitions.
        state.withLockedValue { s in
            s.byUser[client.userID, default: []].insert(client)
            let newKeys = s.registry.add(client, keys: keys)
            // A socket is only taken while the consumer is up: one that got `ready` while
            // the broker was back but the consumer not yet would get none of its events
            // and then be told to resume (1012) all the same; it is refused (1013) instead.
            bridge.bind(newKeys) { [bridge] ok in done(ok && bridge.isConsuming) }
        }
    }

    /// Removes the client; returns whether it was the user's last socket here and the
    /// room keys it had (for the offline presence event).
    @discardableResult
    func unsubscribe(_ client: RelayClient) -> (last: Bool, rooms: [String]) {
        state.withLockedValue { s in
            let rooms = Array(s.registry.keys(of: client).filter { $0.hasPrefix("room.") })
            let gone = s.registry.removeAll(client)
            if !gone.isEmpty { bridge.unbind(gone) }
            s.byUser[client.userID]?.remove(client)
            let last = s.byUser[client.userID]?.isEmpty ?? true
            if last { s.byUser[client.userID] = nil }
            return (last, rooms)
        }
    }

    /// Whether any socket here wants `key` (a pending unbind of it is then skipped).
    func isInUse(_ key: String) -> Bool {
        state.withLockedValue { !$0.registry.clients(for: key).isEmpty }
    }

    func isSubscribed(_ client: RelayClient, to key: String) -> Bool {
        state.withLockedValue { $0.registry.keys(of: client).contains(key) }
    }

    /// One event from the broker. Membership events change the user's subscriptions in the
    /// same critical section that picks the targets, so the room's next event (behind this
    /// one in the queue) already sees the change. `alsoKeys`: the message's other routing
    /// keys (its CC header); a socket subscribed to several of them gets the event once.
    func deliver(routingKey: String, alsoKeys: [String] = [], body: [UInt8], event: String?, user: String?) {
        let targets: [RelayClient] = state.withLockedValue { s in
            if event == "member.joined", let user, routingKey.hasPrefix("room."), let clients = s.byUser[user] {
                for c in clients {
                    let newKeys = s.registry.add(c, keys: [routingKey])
                    if !newKeys.isEmpty { bridge.bind(newKeys) { _ in } }
                }
            }
            var targets = s.registry.clients(for: routingKey)
            for key in alsoKeys { targets.formUnion(s.registry.clients(for: key)) }
            if event == "typing" || event == "presence", let user {
                // Not echoed to the sender's own sockets.
                targets = targets.filter { $0.userID != user }
            }
            if event == "member.left", let user, routingKey.hasPrefix("room."), let clients = s.byUser[user] {
                for c in clients {
                    let gone = s.registry.remove(c, keys: [routingKey])
                    if !gone.isEmpty { bridge.unbind(gone) }
                }
            }
            return Array(targets)
        }
        guard !targets.isEmpty else { return }
        // The whole frame is encoded once; every socket writes the same bytes.
        let frame = Hub.textFrame(body)
        // A session's own key carries its revocation: the event is the last frame, then 4401.
        let closeAfter: UInt16? = routingKey.hasPrefix("session.") ? RelayCloseCode.unauthorized : nil
        // Handed to each event loop's outbox once for all of its sockets, not once per socket.
        var byLoop: [ObjectIdentifier: [RelayClient]] = [:]
        for client in targets { byLoop[ObjectIdentifier(client.channel.eventLoop), default: []].append(client) }
        for (loop, clients) in byLoop {
            if let outbox = outboxes[loop] {
                outbox.enqueue(frame, to: clients, closeAfter: closeAfter)
            } else {
                // A channel on a loop outside the group: cannot happen, but never drop an event.
                for client in clients {
                    client.channel.eventLoop.execute { if client.writeOnLoop(frame, closeAfter: closeAfter) { client.flushOnLoop() } }
                }
            }
        }
    }

    /// An unmasked, unfragmented server text frame (RFC 6455 5.2) around `payload`.
    static func textFrame(_ payload: [UInt8]) -> ByteBuffer {
        var frame = ByteBuffer()
        frame.reserveCapacity(payload.count + 10)
        frame.writeInteger(UInt8(0x81)) // FIN, opcode 1 (text)
        if payload.count < 126 {
            frame.writeInteger(UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(payload.count))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(payload.count))
        }
        frame.writeBytes(payload)
        return frame
    }

    var allKeys: [String] { state.withLockedValue { $0.registry.allKeys } }
    var clientCount: Int { state.withLockedValue { $0.registry.clientCount } }
    var userIDs: [String] { state.withLockedValue { Array($0.byUser.keys) } }
    var allClients: [RelayClient] {
        state.withLockedValue { s in s.byUser.values.reduce(into: Set<RelayClient>()) { $0.formUnion($1) }.map { $0 } }
    }
}

/// The events waiting for one event loop, in arrival order. A relay that keeps up drains
/// one event per task, as before. One that falls behind (a burst into a big room) finds
/// several queued when its task runs: it writes them all and flushes each socket once, so
/// a socket gets several frames in one system call instead of one call per frame. Nothing
/// waits for a batch to fill: a task is scheduled as soon as the first event arrives.
/// `@unchecked Sendable`: the queue is guarded by the lock; drain runs on `loop` only.
final class LoopOutbox: @unchecked Sendable {
    private struct Item {
        let frame: ByteBuffer
        let clients: [RelayClient]
        let closeAfter: UInt16?
    }

    let loop: EventLoop
    private let lock = NIOLock()
    private var queue: [Item] = []
    private var scheduled = false

    init(loop: EventLoop) { self.loop = loop }

    func enqueue(_ frame: ByteBuffer, to clients: [RelayClient], closeAfter: UInt16?) {
        let schedule: Bool = lock.withLock {
            queue.append(Item(frame: frame, clients: clients, closeAfter: closeAfter))
            if scheduled { return false }
            scheduled = true
            return true
        }
        if schedule { loop.execute { self.drain() } }
    }

    private func drain() {
        let batch: [Item] = lock.withLock {
            let items = queue
            queue = []
            scheduled = false
            return items
        }
        if batch.count == 1 {
            let item = batch[0]
            for client in item.clients where client.writeOnLoop(item.frame, closeAfter: item.closeAfter) { client.flushOnLoop() }
            return
        }
        var written: [ObjectIdentifier: RelayClient] = [:]
        for item in batch {
            for client in item.clients where client.writeOnLoop(item.frame, closeAfter: item.closeAfter) {
                written[ObjectIdentifier(client)] = client
            }
        }
        for client in written.values { client.flushOnLoop() }
    }
}
