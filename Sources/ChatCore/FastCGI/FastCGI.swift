import Foundation
import CEpoll
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

/// The FastCGI side of the pool: `threads` threads serve one listening socket, reading
/// every request with FCGX_Accept_r, and no thread is tied to a connection.
///
/// libfcgi's own model ties a thread to a connection: FCGX_Accept_r accepts, and with
/// nginx's `fastcgi_keep_conn on` the thread then blocks reading that connection until
/// nginx closes it. nginx keeps idle connections open, so threads sat on idle connections
/// while new ones waited in the backlog (p99 35-45 ms on /api/ping, and a small keepalive
/// cache to limit it meant a connect, accept and close for every seventh request).
/// Here the threads share an epoll set instead: the listening socket and every idle
/// connection are in it, one-shot, and a thread takes whichever becomes readable:
/// - the listening socket: it accepts what is pending (non-blocking) and adds each
///   connection to the set;
/// - a connection: FCGX_Accept_r reads the request from it (a request struct whose
///   connection is open reads instead of accepting), the handler answers,
///   FCGX_Finish_r ends the request, and the connection goes back into the set unless
///   libfcgi closed it (nginx closed it, sent garbage, or did not ask to keep it).
/// Idle connections cost a descriptor and a request struct, no thread.
///
/// SIGTERM/SIGINT (taken with sigwait: call `ShutdownSignal.block()` before any thread
/// starts) shut the listening socket down, so nginx fails over to the other processes at
/// once; each thread finishes the request it holds and exits; a request that arrives on an
/// idle connection meanwhile is answered 503 `fcgiapp` with Retry-After.
public final class FastCGIServer: @unchecked Sendable {
    public typealias Handler = @Sendable (_ threadIndex: Int, _ request: HTTPRequest) -> HTTPReply

    private let socketPath: String
    private let threads: Int
    private let socketMode: mode_t
    private let maxConnections: Int
    private let ioTimeoutSeconds: Int
    private var listenFD: Int32 = -1
    private var epollFD: Int32 = -1
    private var wakeFD: Int32 = -1
    private let stopping = ManagedAtomicFlag()

    // epoll tags: 0 the listening socket, 1 the shutdown eventfd, 2+n connection slot n.
    private static let listenTag: UInt64 = 0
    private static let wakeTag: UInt64 = 1
    private static let firstSlotTag: UInt64 = 2

    // Connection slots: a request struct each, reused. A slot in use belongs to one thread
    // from the event that woke it until it re-arms the connection (EPOLLONESHOT), so only
    // taking and returning slots needs the lock.
    private let slotLock = NSLock()
    private var slots: [UnsafeMutablePointer<FCGX_Request>] = []
    private var freeSlots: [Int] = []
    private var listenPaused = false

    /// `maxConnections`: connections open at once (more wait in the backlog);
    /// `ioTimeoutSeconds`: how long a read or write inside a request may block.
    public init(socketPath: String, threads: Int, socketMode: mode_t = 0o666, maxConnections: Int = 1024,
                ioTimeoutSeconds: Int = 30) {
        self.socketPath = socketPath
        self.threads = max(1, threads)
        self.socketMode = socketMode
        self.maxConnections = max(1, maxConnections)
        self.ioTimeoutSeconds = max(1, ioTimeoutSeconds)
    }

    deinit {
        for slot in slots { slot.deallocate() }
    }

    /// Opens the socket, runs the threads and blocks until a shutdown signal arrived and
    /// every thread has finished its request. `perThreadStart` runs on each thread before
    /// it serves (connections wait in the socket's backlog or the epoll set meanwhile).
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
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        listenFD = fd
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = swiftchat_eventfd()
        guard epollFD >= 0, wakeFD >= 0,
              swiftchat_epoll_arm(epollFD, EPOLL_CTL_ADD, fd, Self.listenTag, 1) == 0,
              swiftchat_epoll_arm(epollFD, EPOLL_CTL_ADD, wakeFD, Self.wakeTag, 0) == 0 else {
            throw ConfigError.invalid("FCGI", "epoll set-up failed: \(String(cString: strerror(errno)))")
        }

        let group = DispatchGroup()
        for index in 0..<threads {
            group.enter()
            let thread = Thread { [self] in
                perThreadStart(index)
                self.serve(index: index, handler: handler)
                group.leave()
            }
            thread.name = "fcgi-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }

        ShutdownSignal.wait()
        stopping.set()
        onShutdown()
        // New connections are refused from now on; the eventfd (level-triggered, in every
        // thread's epoll_wait) wakes each idle thread, and a thread inside a request
        // finishes it first.
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
        _ = swiftchat_eventfd_signal(wakeFD)
        let finished = group.wait(timeout: .now() + 15) == .success
        Glibc.close(fd)
        if finished {
            // Idle kept connections: nginx sees them close and drops them from its cache.
            slotLock.lock()
            for slot in slots where slot.pointee.ipcFd >= 0 {
                Glibc.close(slot.pointee.ipcFd)
                slot.pointee.ipcFd = -1
            }
            slotLock.unlock()
        }
        if socketPath.hasPrefix("/") { unlink(socketPath) }
    }

    private func serve(index: Int, handler: Handler) {
        var tag: UInt64 = 0
        while true {
            let n = swiftchat_epoll_wait_one(epollFD, &tag, -1)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { break }
            if n == 0 { continue }
            if tag == Self.wakeTag { break }
            if tag == Self.listenTag {
                if stopping.isSet { break }
                acceptPending()
                continue
            }
            let slot = Int(tag - Self.firstSlotTag)
            serveConnection(slot: slot, request: slotRequest(slot), index: index, handler: handler)
            if stopping.isSet { break }
        }
    }

    /// Accepts every pending connection (the listening socket is non-blocking) into a free
    /// slot, then re-arms the listening socket, or leaves it paused while every slot is
    /// taken (a slot coming free re-arms it).
    private func acceptPending() {
        while true {
            slotLock.lock()
            let full = slots.count - freeSlots.count >= maxConnections
            if full { listenPaused = true }
            slotLock.unlock()
            if full { return }
            let conn = accept(listenFD, nil, nil)
            if conn < 0 {
                switch errno {
                case EINTR, ECONNABORTED, EPROTO: continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors: give requests in flight a moment to return some.
                    usleep(20_000)
                default: break // EAGAIN: nothing pending; EINVAL: shut down
                }
                break
            }
            _ = fcntl(conn, F_SETFD, FD_CLOEXEC)
            // TCP (FCGI_SOCKET host:port): replies are small writes, no Nagle delay. On a
            // unix socket this fails harmlessly.
            var one: Int32 = 1
            _ = setsockopt(conn, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            // A thread reads a connection only once it is readable, but a request that
            // stops half-way (or a peer that stops reading the reply) would hold it: reads
            // and writes give up after ioTimeout, and libfcgi closes the connection.
            var limit = timeval(tv_sec: ioTimeoutSeconds, tv_usec: 0)
            _ = setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            _ = setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            let slot = takeSlot()
            let request = slotRequest(slot)
            FCGX_InitRequest(request, -1, 0)
            // An open connection makes FCGX_Accept_r read instead of accept; keepConnection
            // keeps the FCGX_Finish_r it starts with from closing it before the first request.
            request.pointee.ipcFd = conn
            request.pointee.keepConnection = 1
            if swiftchat_epoll_arm(epollFD, EPOLL_CTL_ADD, conn, Self.firstSlotTag + UInt64(slot), 1) != 0 {
                Glibc.close(conn)
                request.pointee.ipcFd = -1
                returnSlot(slot)
            }
        }
        if !stopping.isSet { _ = swiftchat_epoll_arm(epollFD, EPOLL_CTL_MOD, listenFD, Self.listenTag, 1) }
    }

    private func takeSlot() -> Int {
        slotLock.lock()
        defer { slotLock.unlock() }
        if let slot = freeSlots.popLast() { return slot }
        let request = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: 1)
        FCGX_InitRequest(request, -1, 0)
        slots.append(request)
        return slots.count - 1
    }

    private func slotRequest(_ slot: Int) -> UnsafeMutablePointer<FCGX_Request> {
        slotLock.lock()
        defer { slotLock.unlock() }
        return slots[slot]
    }

    private func returnSlot(_ slot: Int) {
        slotLock.lock()
        freeSlots.append(slot)
        let resume = listenPaused && !stopping.isSet
        listenPaused = false
        slotLock.unlock()
        if resume { _ = swiftchat_epoll_arm(epollFD, EPOLL_CTL_MOD, listenFD, Self.listenTag, 1) }
    }

    /// One request from a readable connection, then the connection back into the set (or
    /// its slot freed when libfcgi closed it).
    private func serveConnection(slot: Int, request: UnsafeMutablePointer<FCGX_Request>, index: Int, handler: Handler) {
        // The connection's next request; a closed or broken connection is closed by libfcgi
        // (which then finds no listening socket, -1, and returns an error).
        guard FCGX_Accept_r(request) >= 0 else {
            if request.pointee.ipcFd >= 0 { FCGX_Free(request, 1) }
            returnSlot(slot)
            return
        }
        if stopping.isSet {
            // Arrived during shutdown: answer so the client can retry elsewhere.
            write(HTTPReply.error(.unavailable("fcgiapp", retryAfter: 1)), to: request)
            FCGX_Finish_r(request)
            // Closed at once (libfcgi's own close waits up to 2 s for nginx to close first).
            if request.pointee.ipcFd >= 0 { Glibc.close(request.pointee.ipcFd); request.pointee.ipcFd = -1 }
            returnSlot(slot)
            return
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
        let conn = request.pointee.ipcFd
        if conn < 0 {
            returnSlot(slot) // not kept (or the write failed): libfcgi closed it
        } else if swiftchat_epoll_arm(epollFD, EPOLL_CTL_MOD, conn, Self.firstSlotTag + UInt64(slot), 1) != 0 {
            FCGX_Free(request, 1)
            returnSlot(slot)
        }
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
