// Bench: micro-benchmarks of swiftchat's own code paths, printed as numbers.
//   Bench argon2 [seconds] [threads]   argon2id hashes/s with the production parameters
//   Bench jwt [seconds]                JWT sign+verify/s
//   Bench ws-clients                   bench/ws_load.py's WebSocket clients (WSClients.swift)
import Foundation
import ChatCore

let args = Array(CommandLine.arguments.dropFirst())
let what = args.first ?? "argon2"
let seconds = args.count > 1 ? Double(args[1]) ?? 5 : 5
let threads = args.count > 2 ? Int(args[2]) ?? ProcessInfo.processInfo.activeProcessorCount : ProcessInfo.processInfo.activeProcessorCount

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add(_ k: Int) { lock.lock(); n += k; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

func run(threads: Int, seconds: Double, _ body: @escaping @Sendable () -> Void) -> Double {
    let counter = Counter()
    let group = DispatchGroup()
    let start = Date()
    for _ in 0..<threads {
        group.enter()
        Thread {
            var local = 0
            while Date().timeIntervalSince(start) < seconds {
                body()
                local += 1
            }
            counter.add(local)
            group.leave()
        }.start()
    }
    group.wait()
    return Double(counter.value) / Date().timeIntervalSince(start)
}

switch what {
case "argon2":
    let hasher = PasswordHasher.owaspMinimum
    let encoded = try! hasher.hash("benchmark password")
    let rate = run(threads: threads, seconds: seconds) { _ = hasher.verify("benchmark password", encoded: encoded) }
    print(String(format: "argon2id verify (m=%d KiB, t=%d, p=%d), %d threads: %.1f hashes/s",
                 hasher.memoryKiB, hasher.timeCost, hasher.parallelism, threads, rate))
case "jwt":
    let signer = JWTSigner(secret: Crypto.randomBytes(32))
    let rate = run(threads: 1, seconds: seconds) {
        let t = signer.sign(.init(sub: "u", sid: "s", iat: 0, exp: Int64.max / 2))
        _ = try? signer.verify(t)
    }
    print(String(format: "JWT HS256 sign+verify, 1 thread: %.0f /s", rate))
case "ws-clients":
    WSClients.main()
default:
    print("usage: Bench argon2|jwt [seconds] [threads] | ws-clients")
    exit(2)
}
