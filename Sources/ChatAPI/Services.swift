import Foundation
import ChatCore

/// The connections one FastCGI thread owns: its own PostgreSQL, Redis and AMQP
/// connections (lazy, reconnecting) and the process-wide MongoDB pool.
///
/// `@unchecked Sendable`: an instance is created for one pool thread and only that thread
/// uses it (the application indexes them by thread).
public final class ThreadServices: @unchecked Sendable {
    public let settings: ServiceSettings
    public let postgres: PostgresConnection
    public let redis: RedisConnection
    public let amqp: AMQPConnection
    public let mongo: MongoPool
    public let sessions: SessionStore
    public let jwt: JWTSigner
    public let verifiedTokens = VerifiedTokenCache()

    public init(settings: ServiceSettings, mongo: MongoPool, emailQueue: Topology.TaskQueue, sessionTTL: Int) throws {
        self.settings = settings
        self.postgres = PostgresConnection(conninfo: settings.pgConninfo)
        self.redis = RedisConnection(settings: settings)
        // No heartbeats: a FastCGI thread spends its idle time blocked in accept and cannot
        // answer them, so the broker would close every idle connection after 2 x 30 s and
        // the next send would pay a reconnect. A connection that did die is found on use
        // (AMQPConnection reopens it once and retries the publish).
        self.amqp = try AMQPConnection(url: settings.amqpURL, confirms: true, heartbeatSeconds: 0)
        self.mongo = mongo
        self.sessions = SessionStore(redis: redis, ttlSeconds: sessionTTL)
        self.jwt = JWTSigner(secret: settings.jwtSecret)
        amqp.onConnect = { conn in
            try Topology.declareEvents(on: conn)
            try emailQueue.declare(on: conn)
        }
    }
}

extension ThreadServices {
    /// The statements of the hot paths (a room's access check, a send's seq), prepared on
    /// every thread's connection at start.
    public static let hotStatements: [(sql: String, parameters: Int)] = [
        (ChatSupport.accessSQL, 2),
        (MessageRoutes.nextSeqSQL, 2),
    ]

    /// Opens this thread's PostgreSQL (with `hotStatements` prepared), Redis and RabbitMQ
    /// connections, so the first requests after a start pay no connect: a burst right
    /// after a restart otherwise made every thread connect at once (sends stalled 50 to
    /// 100 ms). Run on the thread that owns these services, before it serves. Returns the
    /// dependencies that could not be reached: they are left for the first request to
    /// find and report (503), and the process starts either way.
    public func warmUp() -> [DependencyError.Dependency] {
        var down: [DependencyError.Dependency] = []
        do {
            for statement in Self.hotStatements { try postgres.prepare(statement.sql, parameters: statement.parameters) }
        } catch let e as DependencyError {
            down.append(e.dependency)
        } catch {
            // A statement the schema cannot take yet (migrations still running on a new
            // database): it is prepared on first use instead.
        }
        if (try? redis.ping()) == nil { down.append(.redis) }
        do { _ = try amqp.connect() } catch { down.append(.rabbitmq) }
        return down
    }
}

/// Dependency health, shared by GET /api/health and the tests.
public struct HealthReport: Encodable, Sendable {
    public struct Check: Encodable, Sendable {
        public let status: String
        public let latency_ms: Double
    }
    public let status: String
    public let dependencies: [String: Check]
    public let down: [String]

    public static func measure(_ services: ThreadServices) -> HealthReport {
        var checks: [String: Check] = [:]
        var down: [String] = []
        func probe(_ name: String, _ body: () throws -> Void) {
            let start = Clock.monotonicNanos()
            var ok = true
            do { try body() } catch { ok = false }
            let ms = (Clock.millisSince(start) * 100).rounded() / 100
            checks[name] = Check(status: ok ? "up" : "down", latency_ms: ms)
            if !ok { down.append(name) }
        }
        probe("postgresql") { try services.postgres.ping() }
        probe("redis") { try services.redis.ping() }
        probe("mongodb") { try services.mongo.withClient { try $0.ping() } }
        // A passive declare is a cheap round trip that also proves the topology exists.
        probe("rabbitmq") { try services.amqp.declareExchange(Topology.eventsExchange) }
        return HealthReport(status: down.isEmpty ? "ok" : "unavailable", dependencies: checks, down: down)
    }
}
