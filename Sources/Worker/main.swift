// Worker: the Celery of the design. Consumes durable task queues from RabbitMQ (emails
// today) with manual acks, retries with back-off, and dead-letters what keeps failing.
//
//   Worker                 run until SIGTERM
//   Worker replay-dead     move dead letters back into the task queue
import Foundation
import Logging
import ChatCore

ShutdownSignal.block()
let config: Config
do {
    config = try Config.load()
} catch {
    FileHandle.standardError.write(Data("worker: \(error)\n".utf8))
    exit(78)
}
Log.bootstrap(config)
let logger = Logger(label: "worker")

do {
    let settings = try ServiceSettings(config)
    let queue = Topology.emailQueue(retryDelaysMs: try config.intList("WORKER_RETRY_DELAYS_MS", default: [5000, 30000, 120000]))
    if CommandLine.arguments.dropFirst().first == "replay-dead" {
        let n = try TaskRunner.replayDead(queue: queue, amqpURL: settings.amqpURL)
        print("replayed \(n) task(s) from \(queue.deadLetterQueue) into \(queue.name)")
        exit(0)
    }
    let stop = ManagedAtomicFlag()
    let sender = EmailSender(settings: settings)
    let runner = try TaskRunner(queue: queue, amqpURL: settings.amqpURL, prefetch: try config.int("WORKER_PREFETCH", default: 4),
                                handle: sender.handle)
    ShutdownSignal.onSignal { _ in
        logger.info("shutting down after the task in hand")
        stop.set()
    }
    logger.info("worker started", metadata: ["queue": "\(queue.name)", "max_attempts": "\(queue.maxAttempts)", "pid": "\(getpid())"])
    runner.run(until: stop)
    logger.info("worker stopped")
} catch {
    logger.critical("worker cannot start", metadata: ["error": "\(error)"])
    exit(1)
}
