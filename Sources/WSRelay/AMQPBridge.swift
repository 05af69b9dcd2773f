import Foundation
import Logging
import NIOConcurrencyHelpers
import ChatCore

/// The relay's two broker connections. A consumer on its own thread reads the relay's
/// queue (rabbitmq-c blocks, so never on an event loop) and hands events to the hub;
/// a control connection on a serial queue performs binds and unbinds as sockets come and go.
///
/// The queue `relay.<id>` is not exclusive (the control connection must bind it) and
/// expires 60 s after its consumer is gone, so a dead relay leaves nothing behind.
final class AMQPBridge: @unchecked Sendable {
    let queueName: String
    private let url: String
    private let logger = Logger(label: "relay.amqp")
    private let controlQueue = DispatchQueue(label: "relay.amqp.control")
    /// Only used on `controlQueue`.
    private var control: AMQPConnection?
    private let consumerUp = NIOLockedValueBox(false)
    private let stopFlag = ManagedAtomicFlag()
    weak var hub: Hub?

    static let queueArguments: [String: AMQPValue] = ["x-expires": .int(60_000)]

    init(url: String, relayID: String) {
        self.url = url
        self.queueName = "relay." + relayID
    }

    var isConsuming: Bool { consumerUp.withLockedValue { $0 } }

    func bind(_ keys: [String], done: @escaping @Sendable (Bool) -> Void) {
        guard !keys.isEmpty else { done(true); return }
        controlQueue.async { [self] in
            done(self.withControl { c in for k in keys { try c.bind(queue: self.queueName, exchange: Topology.eventsExchange, routingKey: k) } })
        }
    }

    /// Publishes an event the relay originates (typing, presence), with a confirm.
    func publish(key: String, event: String, user: String, body: [UInt8]) {
        publish(keys: [key], event: event, user: user, body: body)
    }

    /// Room keys per message of `publish(keys:)`: the CC header must fit in the content
    /// header frame (frame_max 128 KiB); 500 room keys take about 23 KiB.
    static let keysPerMessage = 500

    /// Publishes one event to several routing keys as one message: the first is the routing
    /// key, the rest go in RabbitMQ's `CC` header (sender-selected distribution). A queue
    /// bound to several of them still gets the message once, and a relay delivers it to
    /// the sockets of all of them (Hub.deliver), so a user who shares three rooms with
    /// someone gets their presence change once, not three times.
    func publish(keys: [String], event: String, user: String, body: [UInt8]) {
        guard !keys.isEmpty else { return }
        controlQueue.async { [self] in
            for start in stride(from: 0, to: keys.count, by: AMQPBridge.keysPerMessage) {
                let chunk = keys[start..<min(start + AMQPBridge.keysPerMessage, keys.count)]
                var headers: [String: AMQPValue] = ["x-event": .string(event), "x-user": .string(user)]
                if chunk.count > 1 { headers["CC"] = .strings(Array(chunk.dropFirst())) }
                _ = self.withControl { c in
                    try c.publish(exchange: Topology.eventsExchange, routingKey: chunk.first!, body: body, mandatory: false,
                                  persistent: false, headers: headers)
                }
            }
        }
    }

    /// Unbinds are not urgent (an extra binding only costs traffic) and can come by the
    /// thousand when many sockets close: they are drained in small batches so that binds
    /// for new sockets queued meanwhile run in between, and a key that is needed again by
    /// the time its turn comes is left bound.
    func unbind(_ keys: [String]) {
        let schedule = pendingUnbinds.withLockedValue { state -> Bool in
            state.keys.formUnion(keys)
            defer { state.draining = true }
            return !state.draining
        }
        if schedule { controlQueue.async { [self] in self.drainUnbinds() } }
    }

    private struct PendingUnbinds { var keys = Set<String>(); var draining = false }
    private let pendingUnbinds = NIOLockedValueBox(PendingUnbinds())

    private func drainUnbinds() {
        let batch = pendingUnbinds.withLockedValue { state -> [String] in
            let batch = Array(state.keys.prefix(32))
            state.keys.subtract(batch)
            return batch
        }
        let unused = batch.filter { hub?.isInUse($0) != true }
        if !unused.isEmpty {
            _ = withControl { c in for k in unused { try c.unbind(queue: self.queueName, exchange: Topology.eventsExchange, routingKey: k) } }
        }
        let more = pendingUnbinds.withLockedValue { state -> Bool in
            if state.keys.isEmpty { state.draining = false }
            return !state.keys.isEmpty
        }
        if more { controlQueue.async { [self] in self.drainUnbinds() } }
    }

    /// Runs `body` on the control connection, reconnecting if it went stale and retrying
    /// with back-off for a few seconds (a broker that is just restarting flaps).
    private func withControl(_ body: (AMQPConnection) throws -> Void) -> Bool {
        let attempts = 5
        for attempt in 0..<attempts {
            if attempt >= 2 { Thread.sleep(forTimeInterval: 0.25 * Double(1 << (attempt - 2))) }
            do {
                if control == nil {
                    let c = try AMQPConnection(url: url, confirms: true, heartbeatSeconds: 0)
                    c.onConnect = { [queueName] c in
                        try Topology.declareEvents(on: c)
                        try c.declareQueue(queueName, durable: false, arguments: AMQPBridge.queueArguments)
                    }
                    control = c
                }
                try body(control!)
                return true
            } catch {
                control?.close()
                control = nil
                if attempt == attempts - 1 { logger.warning("bind/unbind failed", metadata: ["error": "\(error)"]) }
            }
        }
        return false
    }

    func start() {
        let thread = Thread { [self] in self.consumeLoop() }
        thread.name = "amqp-consumer"
        thread.start()
    }

    func stop() { stopFlag.set() }

    private func consumeLoop() {
        var firstConnect = true
        var backoff = 0.5
        var consumer: AMQPConnection? = nil
        while !stopFlag.isSet {
            do {
                if consumer == nil {
                    let c = try AMQPConnection(url: url, confirms: false, heartbeatSeconds: 30)
                    try c.connect()
                    try Topology.declareEvents(on: c)
                    if firstConnect { try c.deleteQueue(queueName) } // no stale bindings from a previous run
                    try c.declareQueue(queueName, durable: false, arguments: AMQPBridge.queueArguments)
                    for key in hub?.allKeys ?? [] {
                        try c.bind(queue: queueName, exchange: Topology.eventsExchange, routingKey: key)
                    }
                    try c.consume(queue: queueName, noAck: true)
                    consumer = c
                    if !firstConnect {
                        // Events published while we were away may be gone: make every client
                        // reconnect and resume by seq rather than silently miss them. Sockets
                        // that finish their handshake from here on see `isConsuming` and are
                        // taken; those that finished before are in this list or were refused,
                        // so none is told to resume twice for one reconnect.
                        for client in hub?.allClients ?? [] { client.close(code: 1012, reason: "relay reconnected to the broker; resume") }
                    }
                    consumerUp.withLockedValue { $0 = true }
                    logger.info("consuming chat events", metadata: ["queue": "\(queueName)"])
                    firstConnect = false
                    backoff = 0.5
                }
                if let d = try consumer!.nextDelivery(timeoutMs: 1000) {
                    hub?.deliver(routingKey: d.routingKey, alsoKeys: d.listHeaders["CC"] ?? [], body: d.body,
                                 event: d.stringHeaders["x-event"], user: d.stringHeaders["x-user"])
                }
            } catch {
                consumer?.close()
                consumer = nil
                consumerUp.withLockedValue { $0 = false }
                logger.warning("broker unavailable, retrying", metadata: ["error": "\(error)", "in_seconds": "\(backoff)"])
                let end = Date().addingTimeInterval(backoff)
                while Date() < end && !stopFlag.isSet { Thread.sleep(forTimeInterval: 0.1) }
                backoff = min(backoff * 2, 5)
            }
        }
        consumer?.close()
    }
}
