import Foundation
import CHiredis

/// A reply, copied out of the redisReply tree.
public enum RedisReply: Equatable, Sendable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RedisReply])

    public var string: String? {
        switch self {
        case .bulk(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulk, .status: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var isNull: Bool { self == .null }
}

/// A command argument; binary-safe.
public protocol RedisArgument: Sendable {
    var redisBytes: [UInt8] { get }
}
extension String: RedisArgument { public var redisBytes: [UInt8] { Array(utf8) } }
extension Substring: RedisArgument { public var redisBytes: [UInt8] { Array(utf8) } }
extension Array: RedisArgument where Element == UInt8 { public var redisBytes: [UInt8] { self } }
extension Int: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Int64: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Double: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }

/// The server answered a command with an error reply (WRONGTYPE, NOSCRIPT...).
public struct RedisCommandError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { "Redis: \(message)" }
}

/// One hiredis connection, used by one thread at a time; connects lazily with a timeout,
/// every command has a timeout, and after a broken connection the next call reconnects.
///
/// `@unchecked Sendable`: the redisContext is only touched from methods of this class and
/// the owner never uses one instance from two threads at once.
public final class RedisConnection: @unchecked Sendable {
    private var context: UnsafeMutablePointer<redisContext>?
    private let host: String
    private let port: Int
    private let password: String?
    private let timeout: timeval

    public init(host: String, port: Int, password: String? = nil, timeoutMs: Int = 2000) {
        self.host = host
        self.port = port
        self.password = password
        self.timeout = timeval(tv_sec: timeoutMs / 1000, tv_usec: suseconds_t((timeoutMs % 1000) * 1000))
    }

    public convenience init(settings: ServiceSettings) {
        self.init(host: settings.redisHost, port: settings.redisPort, password: settings.redisPassword)
    }

    deinit { close() }

    public func close() {
        if let context { redisFree(context) }
        context = nil
    }

    private func connection() throws -> UnsafeMutablePointer<redisContext> {
        if let context, context.pointee.err == 0 { return context }
        close()
        guard let c = redisConnectWithTimeout(host, Int32(port), timeout) else {
            throw DependencyError(.redis, "out of memory")
        }
        if c.pointee.err != 0 {
            let detail = errorText(c)
            redisFree(c)
            throw DependencyError(.redis, "connect: \(detail)")
        }
        guard redisSetTimeout(c, timeout) == REDIS_OK else {
            redisFree(c)
            throw DependencyError(.redis, "cannot set timeout")
        }
        context = c
        if let password {
            let reply = try execute(["AUTH", password])
            if case .error = reply {
                close()
                throw DependencyError(.redis, "AUTH refused")
            }
        }
        return c
    }

    private func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// Sends one command and waits for its reply. An error reply is returned as `.error`.
    @discardableResult
    public func execute(_ args: [any RedisArgument]) throws -> RedisReply {
        try pipeline([args])[0]
    }

    /// Like `execute`, but an error reply throws `RedisCommandError`.
    @discardableResult
    public func command(_ args: any RedisArgument...) throws -> RedisReply {
        let reply = try execute(args)
        if case .error(let message) = reply { throw RedisCommandError(message: message) }
        return reply
    }

    /// Sends several commands in one write and reads all replies (one round trip). A
    /// connection that went stale while idle (Redis restarted) is re-opened once and the
    /// commands sent again; a failure on a fresh connection is thrown.
    @discardableResult
    public func pipeline(_ commands: [[any RedisArgument]]) throws -> [RedisReply] {
        let reused = context != nil
        do {
            return try pipelineOnce(commands)
        } catch is DependencyError where reused {
            return try pipelineOnce(commands)
        }
    }

    private func pipelineOnce(_ commands: [[any RedisArgument]]) throws -> [RedisReply] {
        let c = try connection()
        for args in commands {
            let bytes = args.map(\.redisBytes)
            let rc = withArgv(bytes) { argc, argv, lens in redisAppendCommandArgv(c, argc, argv, lens) }
            guard rc == REDIS_OK else { throw broken(c) }
        }
        var replies = [RedisReply]()
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer? = nil
            guard redisGetReply(c, &raw) == REDIS_OK, let raw else { throw broken(c) }
            let reply = raw.assumingMemoryBound(to: redisReply.self)
            replies.append(RedisConnection.convert(reply))
            freeReplyObject(raw)
        }
        return replies
    }

    public func ping() throws {
        guard try command("PING") == .status("PONG") else { throw DependencyError(.redis, "unexpected PING reply") }
    }

    private func broken(_ c: UnsafeMutablePointer<redisContext>) -> DependencyError {
        let detail = errorText(c)
        close()
        return DependencyError(.redis, detail.isEmpty ? "connection lost" : detail)
    }

    private func withArgv<R>(_ args: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        // Copy each argument into one buffer so the pointers stay valid for the call.
        let total = args.reduce(0) { $0 + $1.count }
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(total, 1))
        defer { buffer.deallocate() }
        var argv = [UnsafePointer<CChar>?]()
        var lens = [Int]()
        var offset = 0
        for a in args {
            a.withUnsafeBufferPointer { src in
                if let base = src.baseAddress {
                    (buffer + offset).withMemoryRebound(to: UInt8.self, capacity: a.count) { $0.update(from: base, count: a.count) }
                }
            }
            argv.append(UnsafePointer(buffer + offset))
            lens.append(a.count)
            offset += a.count
        }
        return argv.withUnsafeMutableBufferPointer { av in
            lens.withUnsafeBufferPointer { lv in body(Int32(args.count), av.baseAddress!, lv.baseAddress!) }
        }
    }

    private static func convert(_ r: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STATUS:
            return .status(String(cString: reply.str))
        case REDIS_REPLY_ERROR:
            return .error(String(cString: reply.str))
        case REDIS_REPLY_INTEGER:
            return .integer(reply.integer)
        case REDIS_REPLY_STRING:
            return .bulk(reply.str.withMemoryRebound(to: UInt8.self, capacity: reply.len) { Array(UnsafeBufferPointer(start: $0, count: reply.len)) })
        case REDIS_REPLY_ARRAY:
            var items = [RedisReply]()
            for i in 0..<reply.elements { items.append(convert(reply.element[i]!)) }
            return .array(items)
        default:
            return .null
        }
    }
}
