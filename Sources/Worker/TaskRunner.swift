import Foundation
import Logging
import ChatCore

/// What a task handler concluded.
enum TaskOutcome: Equatable {
    case done
    case retry(String)        // transient: try again after the next back-off delay
    case fail(String)         // permanent: straight to the dead letters
}

/// Consumes one durable task queue with manual acks: ack only after the work is done;
/// a transient failure goes to the next delay queue (back-off), and after the last
/// attempt, or on a permanent failure, to the dead-letter queue where an operator can
/// inspect it and replay it (`Worker replay-dead`).
final class TaskRunner {
    let queue: Topology.TaskQueue
    let consumer: AMQPConnection
    let publisher: AMQPConnection
    let handle: (AMQPDelivery) -> TaskOutcome
    let logger = Logger(label: "worker")
    let prefetch: Int

    init(queue: Topology.TaskQueue, amqpURL: String, prefetch: Int, handle: @escaping (AMQPDelivery) -> TaskOutcome) throws {
        self.queue = queue
        self.prefetch = prefetch
        self.handle = handle
        consumer = try AMQPConnection(url: amqpURL, confirms: false, heartbeatSeconds: 30)
        // Heartbeats only on the consumer: the publisher idles between retries and cannot answer
        // them (the broker would drop it every minute); a dead publisher is reopened on use.
        publisher = try AMQPConnection(url: amqpURL, confirms: true, heartbeatSeconds: 0)
        consumer.onConnect = { [queue, prefetch] c in
            try queue.declare(on: c)
            try c.qos(prefetch: prefetch)
            try c.consume(queue: queue.name)
        }
        publisher.onConnect = { [queue] c in try queue.declare(on: c) }
    }

    /// Runs until `stop` is set; reconnects with back-off when the broker is away.
    func run(until stop: ManagedAtomicFlag) {
        var backoff = 0.5
        while !stop.isSet {
            do {
                if !consumer.isOpen {
                    try consumer.connect()
                    logger.info("consuming", metadata: ["queue": "\(queue.name)"])
                    backoff = 0.5
                }
                guard let delivery = try consumer.nextDelivery(timeoutMs: 1000) else { continue }
                process(delivery)
            } catch {
                logger.warning("broker unavailable, retrying", metadata: ["error": "\(error)", "in_seconds": "\(backoff)"])
                consumer.close()
                publisher.close()
                sleep(seconds: backoff, unless: stop)
                backoff = min(backoff * 2, 10)
            }
        }
        consumer.close()
        publisher.close()
    }

    private func sleep(seconds: Double, unless stop: ManagedAtomicFlag) {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end && !stop.isSet { Thread.sleep(forTimeInterval: 0.1) }
    }

    func process(_ delivery: AMQPDelivery) {
        let attempt = Int(delivery.intHeaders["x-attempt"] ?? 1)
        let outcome = handle(delivery)
        let meta: Logger.Metadata = ["queue": "\(queue.name)", "attempt": "\(attempt)", "task": "\(delivery.messageId ?? "-")"]
        do {
            switch outcome {
            case .done:
                try consumer.ack(delivery.deliveryTag)
                logger.info("task done", metadata: meta)
            case .retry(let why) where attempt < queue.maxAttempts:
                // Publish the copy (confirmed) before acking the original: a crash in
                // between repeats the task rather than losing it.
                try publisher.publish(exchange: "", routingKey: queue.retryQueue(attempt), body: delivery.body,
                                      headers: ["x-attempt": .int(Int64(attempt + 1))], messageId: delivery.messageId)
                try consumer.ack(delivery.deliveryTag)
                logger.warning("task failed, will retry", metadata: meta.merging(["reason": "\(why)"]) { $1 })
            case .retry(let why), .fail(let why):
                try publisher.publish(exchange: "", routingKey: queue.deadLetterQueue, body: delivery.body,
                                      headers: ["x-attempt": .int(Int64(attempt)), "x-last-error": .string(String(why.prefix(500)))],
                                      messageId: delivery.messageId)
                try consumer.ack(delivery.deliveryTag)
                logger.error("task dead-lettered", metadata: meta.merging(["reason": "\(why)"]) { $1 })
            }
        } catch {
            // Not acked: the broker redelivers it once the connection is back.
            logger.warning("could not settle task; it will be redelivered", metadata: meta.merging(["error": "\(error)"]) { $1 })
            consumer.close()
        }
    }

    /// Moves every dead letter back into the task queue with a fresh attempt count.
    static func replayDead(queue: Topology.TaskQueue, amqpURL: String) throws -> Int {
        let conn = try AMQPConnection(url: amqpURL, confirms: true)
        conn.onConnect = { try queue.declare(on: $0) }
        defer { conn.close() }
        var moved = 0
        while let d = try conn.get(queue: queue.deadLetterQueue) {
            try conn.publish(exchange: "", routingKey: queue.name, body: d.body, headers: ["x-attempt": .int(1)], messageId: d.messageId)
            try conn.ack(d.deliveryTag)
            moved += 1
        }
        return moved
    }
}
