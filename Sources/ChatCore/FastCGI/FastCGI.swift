import Foundation
import CFCGI

/// One HTTP request as nginx hands it over FastCGI, copied out of libfcgi.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path, still percent-encoded (the router decodes each segment).
    public var path: String
    public var query: String
    /// Header names lower-cased, e.g. "authorization", "content-type".
    public var headers: [String: String]
    public var remoteAddress: String
    public var body: [UInt8]

    public init(method: String, path: String, query: String = "", headers: [String: String] = [:],
                remoteAddress: String = "127.0.0.1", body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.remoteAddress = remoteAddress
        self.body = body
    }

    /// Query parameters, percent-decoded; the last one wins for repeated names.
    public var queryItems: [String: String] {
        var out: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(kv[0]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            let value = kv.count > 1 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
            if !key.isEmpty { out[key] = value }
        }
        return out
    }
}

public struct HTTPReply: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func json<T: Encodable>(_ value: T, status: Int = 200) -> HTTPReply {
        HTTPReply(status: status, headers: [("Content-Type", "application/json")], body: JSON.encode(value))
    }

    public static func rawJSON(_ bytes: [UInt8], status: Int = 200) -> HTTPReply {
        HTTPReply(status: status, headers: [("Content-Type", "application/json")], body: bytes)
    }

    public static func noContent() -> HTTPReply { HTTPReply(status: 204) }

    public static func error(_ e: APIError) -> HTTPReply {
        var headers = [("Content-Type", "application/json")]
        for (k, v) in e.headers.sorted(by: { $0.key < $1.key }) { headers.append((k, v)) }
        return HTTPReply(status: e.status, headers: headers, body: e.body)
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 409: return "Conflict"
        case 413: return "Payload Too Large"
        case 415: return "Unsupported Media Type"
        case 429: return "Too Many Requests"
        case 500: return "Internal Server Error"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }

    /// The CGI-style header block and body that FastCGI carries back to nginx (written
    /// straight into bytes: this runs for every response).
    public func serialized() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(96 + headers.count * 48 + body.count)
        out += "Status: ".utf8
        out += String(status).utf8
        out.append(32)
        out += HTTPReply.reason(status).utf8
        out += "\r\n".utf8
        for (k, v) in headers {
            out += k.utf8
            out += ": ".utf8
            out += v.utf8
            out += "\r\n".utf8
        }
        if status != 204 {
            out += "Content-Length: ".utf8
            out += String(body.count).utf8
            out += "\r\n".utf8
        }
        out += "Cache-Control: no-store\r\n\r\n".utf8
        if status != 204 { out += body }
        return out
    }
}

/// Parses the FastCGI parameters (CGI variables) into a request, enforcing the body limit.
/// Pure, so the malformed-input cases are unit-tested without a socket.
public enum FastCGIRequestParser {
    public static let maxBody = 64 * 1024

    public static func parse(params: [String: String], readBody: (Int) -> [UInt8]) -> Result<HTTPRequest, APIError> {
        guard let method = params["REQUEST_METHOD"], !method.isEmpty, method.utf8.allSatisfy({ $0 >= 65 && $0 <= 90 }) else {
            return .failure(.badRequest("bad_request", "The request has no valid method."))
        }
        let uri = params["REQUEST_URI"] ?? params["DOCUMENT_URI"] ?? ""
        guard uri.hasPrefix("/") else { return .failure(.badRequest("bad_request", "The request has no valid path.")) }
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts[0])
        let query = parts.count > 1 ? String(parts[1]) : (params["QUERY_STRING"] ?? "")
        var headers: [String: String] = [:]
        for (k, v) in params where k.utf8.starts(with: "HTTP_".utf8) {
            // HTTP_USER_AGENT -> user-agent, byte-wise.
            headers[String(decoding: k.utf8.dropFirst(5).map { c -> UInt8 in
                c == 95 ? 45 : (c >= 65 && c <= 90 ? c + 32 : c)
            }, as: UTF8.self)] = v
        }
        if let ct = params["CONTENT_TYPE"], !ct.isEmpty { headers["content-type"] = ct }
        var body: [UInt8] = []
        if let lengthText = params["CONTENT_LENGTH"], !lengthText.isEmpty {
            guard let length = Int(lengthText), length >= 0 else {
                return .failure(.badRequest("bad_request", "Content-Length is not a number."))
            }
            if length > maxBody { return .failure(.payloadTooLarge) }
            body = readBody(length)
            if body.count != length { return .failure(.badRequest("bad_request", "The body is shorter than its Content-Length.")) }
        }
        return .success(HTTPRequest(method: method, path: path, query: query, headers: headers,
                                    remoteAddress: params["REMOTE_ADDR"] ?? "", body: body))
    }
}

/// The FastCGI side of the pool: a socket shared by `threads` threads that each accept
/// with FCGX_Accept_r (no accept mutex needed). SIGTERM/SIGINT close the listening socket
/// so blocked accepts return; each thread finishes the request it holds, then exits.
/// Call `ShutdownSignal.block()` before any thread starts.
public final class FastCGIServer: @unchecked Sendable {
    public typealias Handler = @Sendable (_ threadIndex: Int, _ request: HTTPRequest) -> HTTPReply

    private let socketPath: String
    private let threads: Int
    private let socketMode: mode_t
    private var listenFD: Int32 = -1
    private let stopping = ManagedAtomicFlag()

    public init(socketPath: String, threads: Int, socketMode: mode_t = 0o666) {
        self.socketPath = socketPath
        self.threads = max(1, threads)
        self.socketMode = socketMode
    }

    /// Opens the socket, runs the threads and blocks until a shutdown signal arrived and
    /// every thread has finished its request. `perThreadStart` runs on each thread before
    /// its first accept (connections wait in the socket's backlog meanwhile).
    public func run(handler: @escaping Handler, perThreadStart: @escaping @Sendable (_ threadIndex: Int) -> Void = { _ in },
                    onShutdown: @escaping @Sendable () -> Void = {}) throws {
        guard FCGX_Init() == 0 else { throw ConfigError.invalid("FCGI", "FCGX_Init failed") }
        // libfcgi installs its own SIGTERM handler that only sets a flag; the signals are
        // blocked (ShutdownSignal.block() at the top of main) and taken here with sigwait.
        ShutdownSignal.block()

        if socketPath.hasPrefix("/") { unlink(socketPath) }
        let fd = FCGX_OpenSocket(socketPath, 1024)
        guard fd >= 0 else { throw ConfigError.invalid("FCGI_SOCKET", socketPath) }
        if socketPath.hasPrefix("/") { chmod(socketPath, socketMode) }
        listenFD = fd

        let group = DispatchGroup()
        for index in 0..<threads {
            group.enter()
            let thread = Thread { [self] in
                perThreadStart(index)
                self.serve(index: index, fd: fd, handler: handler)
                group.leave()
            }
            thread.name = "fcgi-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }

        ShutdownSignal.wait()
        stopping.set()
        onShutdown()
        // Wakes every thread blocked in accept(); a thread inside a request finishes it first.
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
        _ = group.wait(timeout: .now() + 15)
        Glibc.close(fd)
        if socketPath.hasPrefix("/") { unlink(socketPath) }
    }

    private func serve(index: Int, fd: Int32, handler: Handler) {
        let request = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: 1)
        defer { request.deallocate() }
        FCGX_InitRequest(request, fd, 0)
        while !stopping.isSet {
            guard FCGX_Accept_r(request) >= 0 else { break }
            if stopping.isSet {
                // Accepted during shutdown: answer so nginx can retry elsewhere.
                write(HTTPReply.error(.unavailable("fcgiapp", retryAfter: 1)), to: request)
                FCGX_Finish_r(request)
                break
            }
            let params = readParams(request)
            let parsed = FastCGIRequestParser.parse(params: params) { length in
                var buf = [UInt8](repeating: 0, count: length)
                var got = 0
                while got < length {
                    let n = buf.withUnsafeMutableBufferPointer { p in
                        p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: length) {
                            FCGX_GetStr($0 + got, Int32(length - got), request.pointee.in)
                        }
                    }
                    if n <= 0 { break }
                    got += Int(n)
                }
                return Array(buf.prefix(got))
            }
            let reply: HTTPReply
            switch parsed {
            case .success(let req): reply = handler(index, req)
            case .failure(let error): reply = .error(error)
            }
            write(reply, to: request)
            FCGX_Finish_r(request)
        }
        FCGX_Free(request, 1)
    }

    /// The CGI variables the parser uses (HTTP_* headers and a few others), copied out
    /// byte-wise: this runs for every request, so no Character-level String work here.
    private func readParams(_ request: UnsafeMutablePointer<FCGX_Request>) -> [String: String] {
        var out: [String: String] = [:]
        out.reserveCapacity(24)
        guard var env = request.pointee.envp else { return out }
        while let entry = env.pointee {
            env += 1
            let bytes = UnsafeRawBufferPointer(start: entry, count: strlen(entry)).bindMemory(to: UInt8.self)
            guard let eq = bytes.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let key = UnsafeBufferPointer(rebasing: bytes[..<eq])
            guard FastCGIServer.wanted(key) else { continue }
            // Parameters that are not valid UTF-8 are dropped (and then reported missing).
            guard let k = FastCGIServer.utf8String(key),
                  let v = FastCGIServer.utf8String(UnsafeBufferPointer(rebasing: bytes[(eq + 1)...])) else { continue }
            out[k] = v
        }
        return out
    }

    /// ASCII (nearly every parameter) is copied as is; anything else must be valid UTF-8.
    static func utf8String(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        if !bytes.contains(where: { $0 >= 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        return String(validating: bytes, as: UTF8.self)
    }

    private static let wantedNames: [[UInt8]] = ["REQUEST_METHOD", "REQUEST_URI", "DOCUMENT_URI", "QUERY_STRING",
                                                 "CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_ADDR"].map { Array($0.utf8) }

    static func wanted(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
        if key.count > 5, key[0] == 72, key[1] == 84, key[2] == 84, key[3] == 80, key[4] == 95 { return true } // "HTTP_"
        return wantedNames.contains { $0.elementsEqual(key) }
    }

    private func write(_ reply: HTTPReply, to request: UnsafeMutablePointer<FCGX_Request>) {
        let bytes = reply.serialized()
        bytes.withUnsafeBufferPointer { p in
            p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                _ = FCGX_PutStr($0, Int32(bytes.count), request.pointee.out)
            }
        }
    }
}

/// A set-once flag readable from any thread.
public final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    public init() {}
    public func set() { lock.lock(); value = true; lock.unlock() }
    public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
