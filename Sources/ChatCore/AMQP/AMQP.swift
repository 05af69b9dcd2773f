import Foundation
import CRabbitMQ

/// Where the broker is: parsed from `amqp://user:password@host:port/vhost` (vhost
/// percent-encoded, so `/%2f` is the default vhost "/").
public struct AMQPEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var vhost: String

    public init(url: String) throws {
        guard let c = URLComponents(string: url), c.scheme == "amqp", let host = c.host, !host.isEmpty else {
            throw ConfigError.invalid("AMQP_URL", url)
        }
        self.host = host
        self.port = c.port ?? 5672
        self.user = c.user.flatMap { $0.removingPercentEncoding } ?? "guest"
        self.password = c.password.flatMap { $0.removingPercentEncoding } ?? "guest"
        let path = c.percentEncodedPath
        if path.isEmpty || path == "/" {
            vhost = "/"
        } else {
            vhost = String(path.dropFirst()).removingPercentEncoding ?? "/"
        }
    }
}

/// A queue or header argument value.
public enum AMQPValue: Sendable, Equatable {
    case string(String)
    case int(Int64)
    /// An array of strings, such as RabbitMQ's `CC` header (more routing keys for one message).
    case strings([String])
}

public struct AMQPDelivery: Sendable {
    public let deliveryTag: UInt64
    public let exchange: String
    public let routingKey: String
    public let body: [UInt8]
    public let redelivered: Bool
    public let messageId: String?
    /// Integer-valued headers (such as `x-attempt`).
    public let intHeaders: [String: Int64]
    /// String-valued headers (such as `x-event`, `x-user`).
    public let stringHeaders: [String: String]
    /// Headers holding an array of strings (such as `CC`).
    public let listHeaders: [String: [String]]
}

/// A broker-side refusal (the connection itself may be fine).
public struct AMQPError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case server(code: Int)   // channel or connection closed by the broker (e.g. 406 PRECONDITION_FAILED)
        case nack                // the broker could not take responsibility for the message
        case unroutable          // mandatory publish with no queue bound (basic.return)
        case consumerCancelled   // the queue we consumed from went away
    }
    public let kind: Kind
    public let message: String
    public var description: String { "AMQP \(kind): \(message)" }
}

private let flagContentType: UInt32 = 1 << 15
private let flagHeaders: UInt32 = 1 << 13
private let flagDeliveryMode: UInt32 = 1 << 12
private let flagExpiration: UInt32 = 1 << 8
private let flagMessageId: UInt32 = 1 << 7

/// One AMQP connection with one channel, used by one thread at a time. It connects
/// lazily; after the connection breaks the next call reconnects and runs `onConnect`
/// again, which re-declares the topology the owner needs.
///
/// Publisher connections enable confirms: `publish` returns only when the broker has
/// taken the message (ack), and throws on nack, on an unroutable mandatory message or
/// on a timeout. Consumer connections should not publish: confirms and deliveries would
/// interleave on one socket, so owners keep a second connection for publishing.
///
/// `@unchecked Sendable`: the connection state is only touched from methods of this
/// class and the owner never uses one instance from two threads at once.
public final class AMQPConnection: @unchecked Sendable {
    private var conn: amqp_connection_state_t?
    private let endpoint: AMQPEndpoint
    private let heartbeatSeconds: Int
    private let timeoutMs: Int
    private let confirms: Bool
    private var publishTag: UInt64 = 0
    private var connecting = false
    private let channel: amqp_channel_t = 1
    /// Run after every (re)connect, e.g. to declare exchanges and queues.
    public var onConnect: ((AMQPConnection) throws -> Void)?

    public init(url: String, confirms: Bool = true, heartbeatSeconds: Int = 30, timeoutMs: Int = 5000) throws {
        self.endpoint = try AMQPEndpoint(url: url)
        self.confirms = confirms
        self.heartbeatSeconds = heartbeatSeconds
        self.timeoutMs = timeoutMs
    }

    deinit { close() }

    /// How the broker lists this process's connections (`rabbitmqctl list_connections
    /// client_properties`): the program and its pid, e.g. "swiftchat WSRelay 4242".
    static let connectionName = "swiftchat \(ProcessInfo.processInfo.processName) \(ProcessInfo.processInfo.processIdentifier)"

    public var isOpen: Bool { conn != nil }

    /// Closes politely (best effort, bounded by the RPC timeout) and frees the connection.
    public func close() {
        guard let c = conn else { return }
        conn = nil
        _ = amqp_channel_close(c, channel, Int32(AMQP_REPLY_SUCCESS))
        _ = amqp_connection_close(c, Int32(AMQP_REPLY_SUCCESS))
        _ = amqp_destroy_connection(c)
    }

    /// Drops the connection without the closing handshake (after a protocol error).
    private func drop() {
        guard let c = conn else { return }
        conn = nil
        _ = amqp_destroy_connection(c)
    }

    private var timeout: timeval { timeval(tv_sec: timeoutMs / 1000, tv_usec: suseconds_t((timeoutMs % 1000) * 1000)) }

    @discardableResult
    public func connect() throws -> amqp_connection_state_t {
        if let conn { return conn }
        guard let c = amqp_new_connection() else { throw DependencyError(.rabbitmq, "out of memory") }
        guard let socket = amqp_tcp_socket_new(c) else {
            amqp_destroy_connection(c)
            throw DependencyError(.rabbitmq, "cannot create socket")
        }
        var tv = timeout
        let rc = amqp_socket_open_noblock(socket, endpoint.host, Int32(endpoint.port), &tv)
        guard rc == AMQP_STATUS_OK.rawValue else {
            amqp_destroy_connection(c)
            throw DependencyError(.rabbitmq, "connect: " + String(cString: amqp_error_string2(rc)))
        }
        _ = amqp_set_rpc_timeout(c, &tv)
        let login = swiftchat_amqp_login_plain(c, endpoint.vhost, 0, 131072, Int32(heartbeatSeconds), endpoint.user, endpoint.password,
                                               AMQPConnection.connectionName)
        guard login.reply_type == AMQP_RESPONSE_NORMAL else {
            amqp_destroy_connection(c)
            throw DependencyError(.rabbitmq, "login refused or timed out")
        }
        conn = c
        connecting = true
        defer { connecting = false }
        do {
            amqp_channel_open(c, channel)
            try check("channel.open")
            if confirms {
                amqp_confirm_select(c, channel)
                try check("confirm.select")
                publishTag = 0
            }
            try onConnect?(self)
        } catch {
            drop()
            throw error
        }
        return c
    }

    /// Checks the reply of the last synchronous method. Any failure closes the
    /// connection (a server exception closes the channel anyway): the next call reconnects.
    private func check(_ what: String) throws {
        guard let c = conn else { throw DependencyError(.rabbitmq, "not connected") }
        let reply = amqp_get_rpc_reply(c)
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            var buf = [CChar](repeating: 0, count: 256)
            let code = swiftchat_amqp_server_error(reply, &buf, buf.count)
            drop()
            throw AMQPError(kind: .server(code: Int(code)), message: "\(what): " + String(cString: buf))
        default:
            let detail = String(cString: amqp_error_string2(reply.library_error))
            drop()
            throw DependencyError(.rabbitmq, "\(what): \(detail)")
        }
    }

    /// Runs a synchronous method; when a connection that sat idle has gone stale (the
    /// broker restarted since its last use) it is re-opened once and the method repeated.
    private func retryingStale<T>(_ body: () throws -> T) throws -> T {
        // Not while (re)connecting: onConnect's declarations fail the connect instead.
        let reused = isOpen && !connecting
        do {
            return try body()
        } catch is DependencyError where reused {
            return try body()
        }
    }

    // MARK: Topology

    public func declareExchange(_ name: String, type: String = "topic", durable: Bool = true) throws {
        try retryingStale {
            let c = try connect()
            name.withCString { n in
                type.withCString { t in
                    _ = amqp_exchange_declare(c, channel, amqp_cstring_bytes(n), amqp_cstring_bytes(t), 0, durable ? 1 : 0, 0, 0, amqp_empty_table)
                }
            }
            try check("exchange.declare \(name)")
        }
    }

    /// Declares a queue. `arguments` carries x-queue-type (quorum), x-dead-letter-exchange,
    /// x-dead-letter-routing-key, x-message-ttl, x-expires... Returns the message count.
    @discardableResult
    public func declareQueue(_ name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
                             arguments: [String: AMQPValue] = [:]) throws -> Int {
        try retryingStale {
            let c = try connect()
            let ok = name.withCString { n in
                withTable(arguments) { table in
                    amqp_queue_declare(c, channel, amqp_cstring_bytes(n), 0, durable ? 1 : 0, exclusive ? 1 : 0, autoDelete ? 1 : 0, table)
                }
            }
            try check("queue.declare \(name)")
            return Int(ok?.pointee.message_count ?? 0)
        }
    }

    public func bind(queue: String, exchange: String, routingKey: String) throws {
        try retryingStale {
            let c = try connect()
            queue.withCString { q in exchange.withCString { e in routingKey.withCString { k in
                _ = amqp_queue_bind(c, channel, amqp_cstring_bytes(q), amqp_cstring_bytes(e), amqp_cstring_bytes(k), amqp_empty_table)
            } } }
            try check("queue.bind \(routingKey)")
        }
    }

    public func unbind(queue: String, exchange: String, routingKey: String) throws {
        try retryingStale {
            let c = try connect()
            queue.withCString { q in exchange.withCString { e in routingKey.withCString { k in
                _ = amqp_queue_unbind(c, channel, amqp_cstring_bytes(q), amqp_cstring_bytes(e), amqp_cstring_bytes(k), amqp_empty_table)
            } } }
            try check("queue.unbind \(routingKey)")
        }
    }

    public func deleteQueue(_ queue: String) throws {
        let c = try connect()
        _ = queue.withCString { q in amqp_queue_delete(c, channel, amqp_cstring_bytes(q), 0, 0) }
        try check("queue.delete \(queue)")
    }

    // MARK: Publishing

    /// Publishes and, on a confirming connection, waits for the broker's ack. A stale
    /// connection (the broker restarted since the last use) is re-opened once and the
    /// publish retried; a failure after that is thrown.
    public func publish(exchange: String, routingKey: String, body: [UInt8], mandatory: Bool = true,
                        persistent: Bool = true, headers: [String: AMQPValue] = [:], messageId: String? = nil,
                        expiration: String? = nil) throws {
        let wasOpen = isOpen
        do {
            try publishOnce(exchange: exchange, routingKey: routingKey, body: body, mandatory: mandatory,
                            persistent: persistent, headers: headers, messageId: messageId, expiration: expiration)
        } catch is DependencyError where wasOpen {
            try publishOnce(exchange: exchange, routingKey: routingKey, body: body, mandatory: mandatory,
                            persistent: persistent, headers: headers, messageId: messageId, expiration: expiration)
        }
    }

    private func publishOnce(exchange: String, routingKey: String, body: [UInt8], mandatory: Bool, persistent: Bool,
                             headers: [String: AMQPValue], messageId: String?, expiration: String?) throws {
        let c = try connect()
        let rc: Int32 = "application/json".withCString { ct in
            (messageId ?? "").withCString { mid in
                (expiration ?? "").withCString { exp in
                    withTable(headers) { table in
                        var props = amqp_basic_properties_t()
                        props._flags = flagContentType | flagDeliveryMode
                        props.content_type = amqp_cstring_bytes(ct)
                        props.delivery_mode = persistent ? 2 : 1
                        if !headers.isEmpty { props._flags |= flagHeaders; props.headers = table }
                        if messageId != nil { props._flags |= flagMessageId; props.message_id = amqp_cstring_bytes(mid) }
                        if expiration != nil { props._flags |= flagExpiration; props.expiration = amqp_cstring_bytes(exp) }
                        return exchange.withCString { e in
                            routingKey.withCString { k in
                                body.withUnsafeBytes { raw in
                                    let bytes = amqp_bytes_t(len: raw.count, bytes: UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!))
                                    return amqp_basic_publish(c, channel, amqp_cstring_bytes(e), amqp_cstring_bytes(k), mandatory ? 1 : 0, 0, &props, bytes)
                                }
                            }
                        }
                    }
                }
            }
        }
        guard rc == AMQP_STATUS_OK.rawValue else {
            drop()
            throw DependencyError(.rabbitmq, "publish: " + String(cString: amqp_error_string2(rc)))
        }
        guard confirms else { return }
        publishTag += 1
        try waitForConfirm(publishTag)
    }

    private func waitForConfirm(_ tag: UInt64) throws {
        guard let c = conn else { throw DependencyError(.rabbitmq, "not connected") }
        let deadline = Clock.monotonicNanos() + UInt64(timeoutMs) * 1_000_000
        var returned = false
        while true {
            let now = Clock.monotonicNanos()
            guard now < deadline else {
                drop()
                throw DependencyError(.rabbitmq, "no publisher confirm within \(timeoutMs) ms")
            }
            let left = deadline - now
            var tv = timeval(tv_sec: Int(left / 1_000_000_000), tv_usec: suseconds_t((left % 1_000_000_000) / 1000))
            var frame = amqp_frame_t()
            let rc = amqp_simple_wait_frame_noblock(c, &frame, &tv)
            if rc == AMQP_STATUS_TIMEOUT.rawValue { continue }
            guard rc == AMQP_STATUS_OK.rawValue else {
                drop()
                throw DependencyError(.rabbitmq, "waiting for confirm: " + String(cString: amqp_error_string2(rc)))
            }
            guard frame.channel == channel || swiftchat_amqp_frame_method_id(&frame) == swiftchat_amqp_connection_close,
                  swiftchat_amqp_frame_is_method(&frame) != 0 else { continue }
            let method = swiftchat_amqp_frame_method_id(&frame)
            if method == swiftchat_amqp_basic_ack || method == swiftchat_amqp_basic_nack {
                var multiple: Int32 = 0
                let acked = swiftchat_amqp_confirm_tag(&frame, &multiple)
                guard acked == tag || (multiple != 0 && acked >= tag) else { continue }
                if method == swiftchat_amqp_basic_nack { throw AMQPError(kind: .nack, message: "broker refused the message") }
                if returned { throw AMQPError(kind: .unroutable, message: "no queue is bound for the routing key") }
                return
            } else if method == swiftchat_amqp_basic_return {
                returned = true
                try skipContent(c)
            } else if method == swiftchat_amqp_channel_close || method == swiftchat_amqp_connection_close {
                drop()
                throw AMQPError(kind: .server(code: 0), message: "broker closed the channel while publishing")
            }
        }
    }

    /// A basic.return is followed by a content header and body frames: read past them.
    private func skipContent(_ c: amqp_connection_state_t) throws {
        var frame = amqp_frame_t()
        var tv = timeout
        guard amqp_simple_wait_frame_noblock(c, &frame, &tv) == AMQP_STATUS_OK.rawValue, swiftchat_amqp_frame_is_header(&frame) != 0 else {
            drop()
            throw DependencyError(.rabbitmq, "malformed basic.return")
        }
        var remaining = swiftchat_amqp_frame_body_size(&frame)
        while remaining > 0 {
            var body = amqp_frame_t()
            var tv2 = timeout
            guard amqp_simple_wait_frame_noblock(c, &body, &tv2) == AMQP_STATUS_OK.rawValue else {
                drop()
                throw DependencyError(.rabbitmq, "malformed basic.return body")
            }
            remaining -= min(remaining, UInt64(swiftchat_amqp_frame_body_fragment_len(&body)))
        }
    }

    // MARK: Consuming

    public func qos(prefetch: Int) throws {
        let c = try connect()
        _ = amqp_basic_qos(c, channel, 0, UInt16(clamping: prefetch), 0)
        try check("basic.qos")
    }

    /// Starts a consumer; with manual acknowledgement unless `noAck` (for transient
    /// events that nobody needs redelivered).
    public func consume(queue: String, noAck: Bool = false) throws {
        let c = try connect()
        _ = queue.withCString { q in amqp_basic_consume(c, channel, amqp_cstring_bytes(q), amqp_empty_bytes, 0, noAck ? 1 : 0, 0, amqp_empty_table) }
        try check("basic.consume \(queue)")
    }

    /// Waits up to `timeoutMs` for the next delivery; nil when none came. Heartbeats are
    /// serviced inside. Throws when the connection or the consumer is gone.
    public func nextDelivery(timeoutMs: Int) throws -> AMQPDelivery? {
        guard let c = conn else { throw DependencyError(.rabbitmq, "not connected") }
        amqp_maybe_release_buffers(c)
        var envelope = amqp_envelope_t()
        var tv = timeval(tv_sec: timeoutMs / 1000, tv_usec: suseconds_t((timeoutMs % 1000) * 1000))
        let reply = amqp_consume_message(c, &envelope, &tv, 0)
        if reply.reply_type == AMQP_RESPONSE_NORMAL {
            defer { amqp_destroy_envelope(&envelope) }
            return AMQPConnection.copy(envelope)
        }
        if reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION {
            if reply.library_error == AMQP_STATUS_TIMEOUT.rawValue { return nil }
            if reply.library_error == AMQP_STATUS_UNEXPECTED_STATE.rawValue {
                var frame = amqp_frame_t()
                var tv2 = timeout
                guard amqp_simple_wait_frame_noblock(c, &frame, &tv2) == AMQP_STATUS_OK.rawValue else {
                    drop()
                    throw DependencyError(.rabbitmq, "connection lost while consuming")
                }
                if swiftchat_amqp_frame_is_method(&frame) != 0 {
                    let method = swiftchat_amqp_frame_method_id(&frame)
                    if method == swiftchat_amqp_channel_close || method == swiftchat_amqp_connection_close {
                        drop()
                        throw DependencyError(.rabbitmq, "broker closed the connection")
                    }
                    if method == swiftchat_amqp_basic_cancel {
                        drop()
                        throw AMQPError(kind: .consumerCancelled, message: "the broker cancelled the consumer")
                    }
                }
                return nil
            }
        }
        let detail = reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? String(cString: amqp_error_string2(reply.library_error)) : "server exception"
        drop()
        throw DependencyError(.rabbitmq, "consume: \(detail)")
    }

    public func ack(_ deliveryTag: UInt64) throws {
        guard let c = conn else { throw DependencyError(.rabbitmq, "not connected: the delivery will be redelivered") }
        let rc = amqp_basic_ack(c, channel, deliveryTag, 0)
        guard rc == AMQP_STATUS_OK.rawValue else {
            drop()
            throw DependencyError(.rabbitmq, "ack failed")
        }
    }

    public func reject(_ deliveryTag: UInt64, requeue: Bool) throws {
        guard let c = conn else { throw DependencyError(.rabbitmq, "not connected: the delivery will be redelivered") }
        let rc = amqp_basic_nack(c, channel, deliveryTag, 0, requeue ? 1 : 0)
        guard rc == AMQP_STATUS_OK.rawValue else {
            drop()
            throw DependencyError(.rabbitmq, "nack failed")
        }
    }

    /// basic.get with manual ack: one message or nil (for operator tools and tests).
    public func get(queue: String) throws -> AMQPDelivery? {
        let c = try connect()
        var tag: UInt64 = 0
        let got = queue.withCString { q in swiftchat_amqp_basic_get(c, channel, amqp_cstring_bytes(q), 0, &tag) }
        if got == 0 { return nil }
        guard got == 1 else {
            try check("basic.get \(queue)")
            throw DependencyError(.rabbitmq, "basic.get failed")
        }
        var message = amqp_message_t()
        let reply = amqp_read_message(c, channel, &message, 0)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            drop()
            throw DependencyError(.rabbitmq, "basic.get: cannot read the message")
        }
        defer { amqp_destroy_message(&message) }
        return AMQPConnection.delivery(tag: tag, exchange: "", routingKey: queue, redelivered: false, message: message)
    }

    // MARK: Copying out of C

    private static func string(_ b: amqp_bytes_t) -> String {
        guard b.len > 0, let p = b.bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: b.len), as: UTF8.self)
    }

    private static func copy(_ e: amqp_envelope_t) -> AMQPDelivery {
        delivery(tag: e.delivery_tag, exchange: string(e.exchange), routingKey: string(e.routing_key),
                 redelivered: e.redelivered != 0, message: e.message)
    }

    private static func delivery(tag: UInt64, exchange: String, routingKey: String, redelivered: Bool, message: amqp_message_t) -> AMQPDelivery {
        let body: [UInt8] = message.body.len > 0 ? Array(UnsafeRawBufferPointer(start: message.body.bytes, count: message.body.len)) : []
        var props = message.properties
        var headers: [String: Int64] = [:]
        var strings: [String: String] = [:]
        var lists: [String: [String]] = [:]
        func text(_ bytes: UnsafeRawPointer?, _ n: Int) -> String {
            n == 0 ? "" : String(decoding: UnsafeRawBufferPointer(start: bytes, count: n), as: UTF8.self)
        }
        if props._flags & flagHeaders != 0 {
            for i in 0..<Int(props.headers.num_entries) {
                let key = string(props.headers.entries[i].key)
                var value: Int64 = 0
                var bytes: UnsafeRawPointer? = nil
                if key.withCString({ swiftchat_amqp_table_get_int(&props.headers, $0, &value) }) == 1 {
                    headers[key] = value
                } else if case let n = key.withCString({ swiftchat_amqp_table_get_string(&props.headers, $0, &bytes) }), n >= 0 {
                    strings[key] = text(bytes, n)
                } else if case let count = key.withCString({ swiftchat_amqp_table_array_count(&props.headers, $0) }), count >= 0 {
                    // Strings only: an element of another kind is left out.
                    lists[key] = (0..<count).compactMap { j in
                        let n = key.withCString { swiftchat_amqp_table_array_string(&props.headers, $0, Int32(j), &bytes) }
                        return n >= 0 ? text(bytes, n) : nil
                    }
                }
            }
        }
        let messageId = props._flags & flagMessageId != 0 ? string(props.message_id) : nil
        return AMQPDelivery(deliveryTag: tag, exchange: exchange, routingKey: routingKey, body: body, redelivered: redelivered,
                            messageId: messageId, intHeaders: headers, stringHeaders: strings, listHeaders: lists)
    }

    /// Builds an amqp_table_t whose strings live for the duration of `body`.
    private func withTable<R>(_ args: [String: AMQPValue], _ body: (amqp_table_t) -> R) -> R {
        if args.isEmpty { return body(amqp_empty_table) }
        let entries = UnsafeMutablePointer<amqp_table_entry_t>.allocate(capacity: args.count)
        var owned: [UnsafeMutablePointer<CChar>] = []
        var arrays: [UnsafeMutablePointer<amqp_field_value_t>] = []
        defer {
            entries.deallocate()
            owned.forEach { free($0) }
            arrays.forEach { $0.deallocate() }
        }
        for (i, (key, value)) in args.sorted(by: { $0.key < $1.key }).enumerated() {
            let k = strdup(key)!
            owned.append(k)
            switch value {
            case .string(let s):
                let v = strdup(s)!
                owned.append(v)
                swiftchat_amqp_entry_string(entries + i, k, v)
            case .int(let n):
                swiftchat_amqp_entry_int(entries + i, k, n)
            case .strings(let list):
                let values = UnsafeMutablePointer<amqp_field_value_t>.allocate(capacity: max(list.count, 1))
                arrays.append(values)
                for (j, s) in list.enumerated() {
                    let v = strdup(s)!
                    owned.append(v)
                    swiftchat_amqp_field_string(values + j, v)
                }
                swiftchat_amqp_entry_array(entries + i, k, values, Int32(list.count))
            }
        }
        return body(amqp_table_t(num_entries: Int32(args.count), entries: entries))
    }
}
