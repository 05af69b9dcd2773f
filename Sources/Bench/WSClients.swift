// `Bench ws-clients`: the WebSocket clients of bench/ws_load.py, in one epoll loop per
// process. The load generator runs on the machine it measures; Python clients spent about
// 18 µs of CPU per delivery, most of it in the interpreter, and that CPU was taken from the
// stack. These do the same work (upgrade, auth frame, ready; then record every
// message.created and answer pings) for the kernel's share of it.
//
// Protocol with the parent (lines on stdin / stdout):
//   in:  {"host": "127.0.0.1", "port": 8101, "conns": [[index, jwt], ...], "concurrency": 64, "max_life": 1800}
//   out: ready OK FAILED SECONDS {"reason": count, ...}
//   in:  clear            out: ok
//   in:  count            out: count RECEIPTS DROPPED
//   in:  collect PATH     out: data RECEIPTS DROPPED UNPARSED OTHER UNSTAMPED {"close reason": count, ...}
//                              or: error MESSAGE (PATH could not be written)
//        (PATH holds five int64 arrays one after the other: connection, client_id, seq, read
//        time ns, arrival time ns)
//   in:  quit             out: bye   (every socket closed with 1000 first)
// Times are CLOCK_REALTIME nanoseconds, as Python's time.time_ns() in the senders.
// The read time is when this process read the frame; the arrival time is when the bytes
// reached the socket (the kernel's receive timestamp, SO_TIMESTAMPNS), which does not
// count the time this process waited for a CPU on the machine it shares with the stack.
// UNSTAMPED receipts got no kernel timestamp: their arrival time is their read time.
import CEpoll
import Foundation

enum WSClients {
    private static let stdinTag = UInt64.max
    private static let created = Array(#""type":"message.created""#.utf8)
    private static let clientIDKey = Array(#""client_id":""#.utf8)
    private static let seqKey = Array(#""seq":"#.utf8)
    private static let readyMark = Array(#""type":"ready""#.utf8)
    private static let errorMark = Array(#""type":"error""#.utf8)

    final class Conn {
        let index: Int64
        let token: String
        var fd: Int32 = -1
        var state = 0 // 0 idle, 1 upgrading, 2 authenticating, 3 ready, 4 gone
        var attempts = 0
        var buf: [UInt8] = []
        init(index: Int64, token: String) { self.index = index; self.token = token }
    }

    // Receipts of message.created frames.
    // One thread: the loop in main() is all there is.
    nonisolated(unsafe) static var rConn: [Int64] = [], rCid: [Int64] = [], rSeq: [Int64] = [], rT: [Int64] = [], rArrived: [Int64] = []
    nonisolated(unsafe) static var dropped = 0, unparsed = 0, otherFrames = 0, unstamped = 0
    nonisolated(unsafe) static var closeCodes: [String: Int] = [:]
    nonisolated(unsafe) static var errors: [String: Int] = [:]

    static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    static func say(_ line: String) {
        _ = writeAll(1, Array((line + "\n").utf8))
    }

    static func json(_ counts: [String: Int]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: counts, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// A masked client frame.
    static func frame(_ opcode: UInt8, _ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x80 | opcode]
        let n = payload.count
        if n < 126 {
            out.append(0x80 | UInt8(n))
        } else {
            out.append(0x80 | 126)
            out.append(UInt8(n >> 8))
            out.append(UInt8(n & 0xFF))
        }
        let key = (0..<4).map { _ in UInt8.random(in: 0...255) }
        out += key
        for (i, b) in payload.enumerated() { out.append(b ^ key[i & 3]) }
        return out
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + sent, bytes.count - sent) }
            if n > 0 { sent += n; continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { usleep(100); continue }
            return false
        }
        return true
    }

    static func find(_ needle: [UInt8], _ hay: UnsafeBufferPointer<UInt8>, _ from: Int, _ to: Int) -> Int? {
        let m = needle.count, last = to - m
        guard m > 0, last >= from, let base = hay.baseAddress else { return nil }
        var i = from
        while i <= last {
            guard let hit = memchr(base + i, Int32(needle[0]), last - i + 1) else { return nil }
            i = UnsafeRawPointer(hit) - UnsafeRawPointer(base)
            var k = 1
            while k < m && hay[i + k] == needle[k] { k += 1 }
            if k == m { return i }
            i += 1
        }
        return nil
    }

    static func digits(_ hay: UnsafeBufferPointer<UInt8>, _ at: Int, _ to: Int) -> Int64? {
        var i = at, v: Int64 = 0
        while i < to, hay[i] >= 48, hay[i] <= 57 { v = v * 10 + Int64(hay[i] - 48); i += 1 }
        return i > at ? v : nil
    }

    static func main() {
        signal(SIGPIPE, SIG_IGN)
        guard let first = readLine(),
              let cfg = try? JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any],
              let host = cfg["host"] as? String, let port = cfg["port"] as? Int,
              let list = cfg["conns"] as? [[Any]] else {
            say("error: the first line must be the JSON configuration")
            exit(2)
        }
        let concurrency = cfg["concurrency"] as? Int ?? 64
        let maxLife = Double(cfg["max_life"] as? Int ?? 1800)
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = min(limit.rlim_max, rlim_t(list.count + 256))
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)

        let conns = list.compactMap { item -> Conn? in
            guard item.count == 2, let token = item[1] as? String else { return nil }
            let index = (item[0] as? Int).map(Int64.init) ?? (item[0] as? NSNumber)?.int64Value ?? -1
            return Conn(index: index, token: token)
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &addr.sin_addr)
        let upgrade = { () -> [UInt8] in
            let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            return Array(("GET /ws HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
        }

        let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
        let scratchSize = 1 << 16
        let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: scratchSize)
        var pending = Array(conns.indices.reversed()) // popLast: in order
        var inFlight = 0, ready = 0, failed = 0
        let started = Date()

        func fail(_ i: Int, _ why: String) {
            let c = conns[i]
            errors[why, default: 0] += 1
            if c.fd >= 0 { Glibc.close(c.fd); c.fd = -1 }
            c.state = 0
            c.buf.removeAll()
            inFlight -= 1
            c.attempts += 1
            if c.attempts < 3 { pending.insert(i, at: 0) } else { failed += 1; c.state = 4 }
        }

        func open(_ i: Int) {
            let c = conns[i]
            inFlight += 1
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { fail(i, "socket: \(String(cString: strerror(errno)))"); return }
            c.fd = fd
            var tv = timeval(tv_sec: 15, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard rc == 0 else { fail(i, "connect: \(String(cString: strerror(errno)))"); return }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            _ = swiftchat_enable_rx_timestamps(fd)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            guard writeAll(fd, upgrade()) else { fail(i, "write: \(String(cString: strerror(errno)))"); return }
            c.state = 1
            _ = swiftchat_epoll_arm(ep, EPOLL_CTL_ADD, fd, UInt64(i), 0)
        }

        func fill() {
            while inFlight < concurrency, let i = pending.popLast() { open(i) }
        }

        func handle(_ i: Int, at t: Int64) {
            let c = conns[i]
            var closed = false
            var got = 0
            var arrived: Int64 = 0
            while true {
                let n = swiftchat_read_stamped(c.fd, scratch, UInt(scratchSize), &arrived)
                if n > 0 { got = n; break }
                if n == 0 { closed = true; break }
                if errno == EINTR { continue }
                if errno != EAGAIN { closed = true }
                break
            }
            // Parsed straight from the read buffer unless a partial frame was left over.
            let leftover = !c.buf.isEmpty
            if leftover && got > 0 { c.buf.append(contentsOf: UnsafeBufferPointer(start: scratch, count: got)) }
            var consumed = 0
            var outcome: String? = nil // a failure before ready
            let parse = { (b: UnsafeBufferPointer<UInt8>) in
                let n = b.count
                var pos = 0
                if c.state == 1 {
                    guard let end = find(Array("\r\n\r\n".utf8), b, 0, n) else { return }
                    let lineEnd = find(Array("\r\n".utf8), b, 0, n) ?? end
                    guard find(Array(" 101 ".utf8), b, 0, lineEnd) != nil else {
                        outcome = "upgrade refused: " + String(decoding: b[0..<lineEnd], as: UTF8.self)
                        return
                    }
                    pos = end + 4
                    c.state = 2
                    let auth = Array(("{\"type\":\"auth\",\"token\":\"" + c.token + "\"}").utf8)
                    if !writeAll(c.fd, frame(1, auth)) { outcome = "auth write failed"; return }
                }
                while n - pos >= 2 {
                    var len = Int(b[pos + 1] & 0x7F), hl = 2
                    if len == 126 {
                        if n - pos < 4 { break }
                        len = Int(b[pos + 2]) << 8 | Int(b[pos + 3]); hl = 4
                    } else if len == 127 {
                        if n - pos < 10 { break }
                        len = 0
                        for k in 0..<8 { len = len << 8 | Int(b[pos + 2 + k]) }
                        hl = 10
                    }
                    let start = pos + hl, end = start + len
                    if end > n { break }
                    switch b[pos] & 0x0F {
                    case 1:
                        if c.state == 3 {
                            if find(created, b, start, end) != nil {
                                if let k = find(clientIDKey, b, start, end), let cid = digits(b, k + clientIDKey.count, end),
                                   let s = find(seqKey, b, k, end), let seq = digits(b, s + seqKey.count, end) {
                                    rConn.append(c.index); rCid.append(cid); rSeq.append(seq); rT.append(t)
                                    if arrived > 0 { rArrived.append(arrived) } else { rArrived.append(t); unstamped += 1 }
                                } else {
                                    unparsed += 1
                                }
                            } else {
                                otherFrames += 1
                            }
                        } else if c.state == 2 {
                            if find(readyMark, b, start, end) != nil {
                                c.state = 3
                                ready += 1
                                inFlight -= 1
                            } else if find(errorMark, b, start, end) != nil {
                                outcome = "error frame before ready: " + String(decoding: b[start..<min(end, start + 80)], as: UTF8.self)
                                return
                            }
                        }
                    case 9:
                        _ = writeAll(c.fd, frame(10, Array(b[start..<end])))
                    case 8:
                        let code = len >= 2 ? Int(b[start]) << 8 | Int(b[start + 1]) : 1005
                        let why = (String(code) + " " + String(decoding: b[(start + min(2, len))..<end], as: UTF8.self))
                            .trimmingCharacters(in: .whitespaces)
                        if c.state == 3 {
                            closeCodes[why, default: 0] += 1
                            dropped += 1
                            c.state = 4
                            Glibc.close(c.fd); c.fd = -1
                        } else {
                            outcome = "closed by the relay: " + why
                        }
                        pos = n
                        return
                    default:
                        break
                    }
                    pos = end
                }
                consumed = pos
            }
            if leftover {
                c.buf.withUnsafeBufferPointer(parse)
            } else {
                parse(UnsafeBufferPointer(start: scratch, count: got))
            }
            if let outcome { fail(i, outcome); return }
            if c.fd < 0 { c.buf.removeAll(); return }
            if leftover {
                if consumed > 0 { c.buf.removeFirst(consumed) }
            } else if consumed < got {
                c.buf = Array(UnsafeBufferPointer(start: scratch + consumed, count: got - consumed))
            }
            if closed {
                if c.state == 3 {
                    dropped += 1
                    closeCodes["no close frame", default: 0] += 1
                    c.state = 4
                    Glibc.close(c.fd); c.fd = -1
                } else {
                    fail(i, "connection lost")
                }
            }
        }

        var tags = [UInt64](repeating: 0, count: 256)
        fill()
        while ready + failed < conns.count {
            let n = swiftchat_epoll_wait_many(ep, &tags, 256, 1000)
            let t = now()
            if n > 0 { for k in 0..<Int(n) { handle(Int(tags[k]), at: t) } }
            fill()
            if Date().timeIntervalSince(started) > 120 + Double(conns.count) / 50 { break }
        }
        say("ready \(ready) \(conns.count - ready) \(String(format: "%.3f", Date().timeIntervalSince(started))) \(json(errors))")

        // Commands arrive on stdin, in the same loop as the sockets.
        _ = fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK)
        _ = swiftchat_epoll_arm(ep, EPOLL_CTL_ADD, 0, stdinTag, 0)
        rConn.reserveCapacity(1 << 20); rCid.reserveCapacity(1 << 20); rSeq.reserveCapacity(1 << 20); rT.reserveCapacity(1 << 20); rArrived.reserveCapacity(1 << 20)
        var line: [UInt8] = []
        var quit = false
        while !quit && Date().timeIntervalSince(started) < maxLife {
            let n = swiftchat_epoll_wait_many(ep, &tags, 256, 5000)
            let t = now()
            guard n > 0 else { continue }
            for k in 0..<Int(n) {
                if tags[k] != stdinTag { handle(Int(tags[k]), at: t); continue }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let got = chunk.withUnsafeMutableBytes { Glibc.read(0, $0.baseAddress!, 4096) }
                if got == 0 { quit = true; break }
                if got < 0 { continue }
                line += chunk[0..<got]
                while let nl = line.firstIndex(of: 10) {
                    let cmd = String(decoding: line[0..<nl], as: UTF8.self)
                    line.removeFirst(nl + 1)
                    if cmd == "clear" {
                        rConn.removeAll(keepingCapacity: true); rCid.removeAll(keepingCapacity: true)
                        rSeq.removeAll(keepingCapacity: true); rT.removeAll(keepingCapacity: true)
                        rArrived.removeAll(keepingCapacity: true)
                        otherFrames = 0
                        unstamped = 0
                        say("ok")
                    } else if cmd == "count" {
                        say("count \(rT.count) \(dropped)")
                    } else if cmd.hasPrefix("collect ") {
                        let path = String(cmd.dropFirst(8))
                        var bytes = Data()
                        for a in [rConn, rCid, rSeq, rT, rArrived] { a.withUnsafeBytes { bytes.append(contentsOf: $0) } }
                        if FileManager.default.createFile(atPath: path, contents: bytes) {
                            say("data \(rT.count) \(dropped) \(unparsed) \(otherFrames) \(unstamped) \(json(closeCodes))")
                        } else {
                            say("error cannot write \(path)")
                        }
                    } else if cmd == "quit" {
                        quit = true
                    }
                }
            }
        }
        for c in conns where c.fd >= 0 {
            if c.state == 3 { _ = writeAll(c.fd, frame(8, [0x03, 0xE8])) }
            Glibc.close(c.fd)
        }
        say("bye")
    }
}
