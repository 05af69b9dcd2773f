import Foundation

/// The broker topology every process agrees on. Declarations are idempotent; each
/// process declares what it uses after every (re)connect, so a restarted broker that
/// lost non-durable state is set up again without an operator.
public enum Topology {
    /// Chat events: routing keys `room.<id>` and `user.<id>`.
    public static let eventsExchange = "chat.events"

    /// A durable task queue with its retry (delay) queues and its dead-letter queue.
    /// Tasks are published to the default exchange with the queue's name as routing key.
    public struct TaskQueue: Sendable {
        public let name: String
        public let retryDelaysMs: [Int]

        public init(name: String, retryDelaysMs: [Int]) {
            self.name = name
            self.retryDelaysMs = retryDelaysMs
        }

        public var deadLetterQueue: String { name + ".dead" }
        public func retryQueue(_ attempt: Int) -> String { "\(name).retry.\(attempt)" }
        /// Attempts in total: the first plus one per retry delay.
        public var maxAttempts: Int { retryDelaysMs.count + 1 }

        public func declare(on amqp: AMQPConnection) throws {
            try amqp.declareQueue(deadLetterQueue, durable: true, arguments: ["x-queue-type": .string("quorum")])
            // A message the worker rejects (malformed) goes straight to the dead letters.
            try amqp.declareQueue(name, durable: true, arguments: [
                "x-queue-type": .string("quorum"),
                "x-dead-letter-exchange": .string(""),
                "x-dead-letter-routing-key": .string(deadLetterQueue),
            ])
            // One delay queue per back-off step: per-queue TTL, then dead-lettered back
            // into the task queue. (Per-message TTLs in one queue would block behind the head.)
            for (i, delay) in retryDelaysMs.enumerated() {
                try amqp.declareQueue(retryQueue(i + 1), durable: true, arguments: [
                    "x-message-ttl": .int(Int64(delay)),
                    "x-dead-letter-exchange": .string(""),
                    "x-dead-letter-routing-key": .string(name),
                ])
            }
        }
    }

    public static func emailQueue(retryDelaysMs: [Int]) -> TaskQueue {
        TaskQueue(name: "tasks.email", retryDelaysMs: retryDelaysMs)
    }

    public static func declareEvents(on amqp: AMQPConnection) throws {
        try amqp.declareExchange(eventsExchange, type: "topic", durable: true)
    }
}
