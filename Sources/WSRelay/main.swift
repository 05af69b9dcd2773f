// WSRelay: holds the WebSocket connections. SwiftNIO event loops for the sockets; one AMQP
// consumer on its own thread bound (per routing key, as sockets need them) to the
// chat-events exchange; fan-out of each event to the sockets that want it.
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOHTTP1
import NIOWebSocket
import ChatCore

ShutdownSignal.block()
PostgresConnection.nameConnections("relay")
let config: Config
do {
    config = try Config.load()
} catch {
    FileHandle.standardError.write(Data("wsrelay: \(error)\n".utf8))
    exit(78)
}
Log.bootstrap(config)
let logger = Logger(label: "relay")

do {
    let settings = try ServiceSettings(config)
    let host = config.string("WS_HOST", default: "127.0.0.1")
    let port = try config.int("WS_PORT", default: 8101)
    let relayID = config.string("RELAY_ID", default: "\(ProcessInfo.processInfo.hostName)-\(port)")
    let loops = try config.int("WS_EVENT_LOOPS", default: System.coreCount)

    let group = MultiThreadedEventLoopGroup(numberOfThreads: loops)
    let blocking = NIOThreadPool(numberOfThreads: 4)
    blocking.start()
    let bridge = AMQPBridge(url: settings.amqpURL, relayID: relayID)
    let hub = Hub(bridge: bridge, group: group)
    bridge.hub = hub
    bridge.start()

    // Seconds a presence claim lives without a refresh (refreshed every third of it): how
    // long the users of a relay that died still show online.
    let presenceTTL = Double(max(3, try config.int("PRESENCE_TTL_SECONDS", default: 90)))
    let relayContext = RelayContext(
        relayID: relayID,
        presence: Presence(relay: relayID, ttl: presenceTTL),
        jwt: JWTSigner(secret: settings.jwtSecret),
        sessions: ObjectPool { RedisConnection(settings: settings) },
        db: ObjectPool { PostgresConnection(conninfo: settings.pgConninfo) },
        blocking: blocking,
        hub: hub,
        authTimeout: .seconds(Int64(try config.int("WS_AUTH_TIMEOUT_SECONDS", default: 10))),
        idleTimeout: .seconds(75),
        maxMessageBytes: 16 * 1024,
        heartbeats: LoopHeartbeats(group: group, interval: .seconds(Int64(try config.int("WS_PING_INTERVAL_SECONDS", default: 30))))
    )

    let health: @Sendable () -> (Int, String) = {
        let up = bridge.isConsuming
        let body = "{\"status\":\(up ? "\"ok\"" : "\"unavailable\""),\"relay_id\":\(JSON.quote(relayID)),\"connections\":\(hub.clientCount),\"bindings\":\(hub.allKeys.count),\"rabbitmq\":\(up ? "\"up\"" : "\"down\"")}"
        return (up ? 200 : 503, body)
    }

    let bootstrap = ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 1024)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
        // Each socket keeps its receive buffer between reads. NIO's default starts at 2 KiB,
        // most of an idle socket's memory; clients send little (auth, typing, pings), and
        // the adaptive allocator grows the buffer for a socket whose reads fill it.
        .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536))
        .childChannelInitializer { channel in
            let httpHandler = HTTPHandler(health: health)
            let upgrader = NIOWebSocketServerUpgrader(
                // The 16 KiB limit is enforced by WebSocketHandler once a frame has been read
                // whole: refusing it inside the decoder leaves its payload unread, and closing
                // then makes the kernel reset the connection, losing the 1009 close frame.
                // Frames over 1 MiB are still cut off by the decoder.
                maxFrameSize: 1 << 20,
                automaticErrorHandling: false, // WebSocketHandler answers decoder errors itself
                shouldUpgrade: { channel, head in
                    let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
                    return channel.eventLoop.makeSucceededFuture(path == "/ws" ? HTTPHeaders() : nil)
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(WebSocketHandler(context: relayContext))
                    }
                })
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                    withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                        context.pipeline.removeHandler(name: "relay.http", promise: nil)
                    }))
                try channel.pipeline.syncOperations.addHandler(httpHandler, name: "relay.http")
            }
        }

    // A previous run of this relay that was killed left its claims: its sockets are gone.
    relayContext.sweepPresence(of: relayID)
    // The heartbeat and the claims are refreshed while the relay runs (they lapse `ttl`
    // after a crash), and relays whose heartbeat lapsed are swept.
    let presenceTimer = DispatchSource.makeTimerSource(queue: .global())
    presenceTimer.schedule(deadline: .now(), repeating: presenceTTL / 3)
    presenceTimer.setEventHandler {
        do {
            let dead = try relayContext.sessions.with { redis in
                try relayContext.presence.refresh(redis, users: hub.userIDs)
                return try relayContext.presence.deadRelays(redis)
            }
            for relay in dead { relayContext.sweepPresence(of: relay) }
        } catch {
            // Redis is down: claims lapse (users show offline) until the next tick succeeds.
            logger.warning("presence refresh failed", metadata: ["error": "\(error)"])
        }
    }
    presenceTimer.resume()

    let server = try bootstrap.bind(host: host, port: port).wait()
    logger.info("relay listening", metadata: ["address": "\(host):\(port)", "relay_id": "\(relayID)", "pid": "\(getpid())"])

    // SIGTERM/SIGINT: 1001 to every client so it reconnects elsewhere, then stop.
    ShutdownSignal.wait()
    logger.info("shutting down: closing sockets with 1001", metadata: ["connections": "\(hub.clientCount)"])
    try? server.close().wait()
    for client in hub.allClients { client.close(code: RelayCloseCode.goingAway, reason: "relay shutting down") }
    Thread.sleep(forTimeInterval: 0.5)
    bridge.stop()
    try? group.syncShutdownGracefully()
    try? blocking.syncShutdownGracefully()
    logger.info("relay stopped")
} catch {
    logger.critical("relay cannot start", metadata: ["error": "\(error)"])
    exit(1)
}
