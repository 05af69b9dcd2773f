import Foundation
import COpenSSL
import CArgon2

/// The one place that calls OpenSSL libcrypto and libargon2.
public enum Crypto {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Cryptographically secure random bytes (OpenSSL's DRBG).
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let rc = out.withUnsafeMutableBytes { RAND_bytes($0.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(count)) }
        // Without a working RNG no token can be made safely: stopping is the only safe answer.
        precondition(rc == 1, "RAND_bytes failed")
        return out
    }

    /// A random (version 4) UUID as lowercase text. Foundation's `UUID()` opens, reads and
    /// closes /dev/urandom for every UUID: three system calls on a send's path, where
    /// OpenSSL's generator needs none.
    public static func uuidV4() -> String {
        var b = randomBytes(16)
        b[6] = (b[6] & 0x0F) | 0x40 // version 4
        b[8] = (b[8] & 0x3F) | 0x80 // RFC 4122 variant
        let hex = Array(Hex.encode(b).utf8)
        return [hex[0..<8], hex[8..<12], hex[12..<16], hex[16..<20], hex[20..<32]]
            .map { String(decoding: $0, as: UTF8.self) }.joined(separator: "-")
    }

    /// A URL-safe random token of `bytes` bytes of entropy (256 bits by default).
    public static func randomToken(bytes: Int = 32) -> String { Base64URL.encode(randomBytes(bytes)) }

    public static func sha256<D: ContiguousBytes>(_ data: D) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        let rc = data.withUnsafeBytes { input in
            out.withUnsafeMutableBytes { md in
                EVP_Digest(input.baseAddress, input.count, md.baseAddress!.assumingMemoryBound(to: UInt8.self), &len, EVP_sha256(), nil)
            }
        }
        precondition(rc == 1 && len == 32, "EVP_Digest(SHA-256) failed")
        return out
    }

    public static func sha256Hex(_ string: String) -> String { Hex.encode(sha256(Array(string.utf8))) }

    public static func hmacSHA256<K: ContiguousBytes, D: ContiguousBytes>(key: K, data: D) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        let ok = key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in
                out.withUnsafeMutableBytes { o in
                    HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count,
                         o.baseAddress!.assumingMemoryBound(to: UInt8.self), &len) != nil
                }
            }
        }
        precondition(ok && len == 32, "HMAC-SHA256 failed")
        return out
    }

    /// Compares in time that depends only on the length, never on where the bytes differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0 } }
    }
}

/// Bounds how many argon2id computations run at once in a process. Each takes m KiB
/// (19 MiB by default) and a core: with 16 pool threads hashing at once, memory would
/// spike by 300 MiB and every login would wait on every other. Default: one per core.
private let hashGate = DispatchSemaphore(value: max(1, ProcessInfo.processInfo.activeProcessorCount))

/// argon2id password hashing. The encoded string carries its own parameters and salt,
/// so raising the parameters later is detected by `needsRehash`.
public struct PasswordHasher: Sendable {
    public var timeCost: UInt32
    public var memoryKiB: UInt32
    public var parallelism: UInt32

    /// OWASP's minimum for argon2id: m = 19 MiB, t = 2, p = 1.
    public static let owaspMinimum = PasswordHasher(timeCost: 2, memoryKiB: 19 * 1024, parallelism: 1)

    public init(timeCost: UInt32, memoryKiB: UInt32, parallelism: UInt32) {
        self.timeCost = timeCost
        self.memoryKiB = memoryKiB
        self.parallelism = parallelism
    }

    /// Call once at process start (before threads): each hash's memory goes back to the
    /// system instead of staying in glibc's per-thread arenas (16 threads x 19 MiB).
    public static func returnMemoryAfterEachHash() {
        swiftchat_fix_mmap_threshold(1 << 20)
    }

    public func hash(_ password: String) throws -> String {
        let salt = Crypto.randomBytes(16)
        let pwd = Array(password.utf8)
        let encodedLen = argon2_encodedlen(timeCost, memoryKiB, parallelism, 16, 32, Argon2_id)
        var encoded = [CChar](repeating: 0, count: encodedLen)
        hashGate.wait()
        defer { hashGate.signal() }
        let rc = argon2id_hash_encoded(timeCost, memoryKiB, parallelism, pwd, pwd.count, salt, salt.count, 32, &encoded, encodedLen)
        guard rc == ARGON2_OK.rawValue else {
            throw Crypto.Failure(description: "argon2id: " + String(cString: argon2_error_message(rc)))
        }
        return String(cString: encoded)
    }

    /// False for a wrong password and for a malformed encoded string alike.
    public func verify(_ password: String, encoded: String) -> Bool {
        let pwd = Array(password.utf8)
        hashGate.wait()
        defer { hashGate.signal() }
        return argon2id_verify(encoded, pwd, pwd.count) == ARGON2_OK.rawValue
    }

    /// True when `encoded` was made with weaker parameters than this hasher's.
    public func needsRehash(_ encoded: String) -> Bool {
        // $argon2id$v=19$m=19456,t=2,p=1$salt$hash
        let parts = encoded.split(separator: "$")
        guard parts.count >= 4, parts[0] == "argon2id" else { return true }
        var m: UInt32 = 0, t: UInt32 = 0, p: UInt32 = 0
        for kv in parts[2].split(separator: ",") {
            let pair = kv.split(separator: "=")
            guard pair.count == 2, let v = UInt32(pair[1]) else { return true }
            switch pair[0] { case "m": m = v; case "t": t = v; case "p": p = v; default: break }
        }
        return m < memoryKiB || t < timeCost || p < parallelism
    }
}
