import Foundation

/// HS256 JSON Web Tokens with the algorithm pinned: the header must say exactly
/// {"alg":"HS256"}; "none" and every other algorithm are refused before any key is used.
public struct JWTSigner: Sendable {
    public struct Claims: Codable, Equatable, Sendable {
        public var sub: String
        public var sid: String
        public var iat: Int64
        public var exp: Int64

        public init(sub: String, sid: String, iat: Int64, exp: Int64) {
            self.sub = sub
            self.sid = sid
            self.iat = iat
            self.exp = exp
        }
    }

    public enum Failure: Error, Equatable {
        case malformed, algorithm, signature, expired
    }

    private let key: [UInt8]

    public init(secret: [UInt8]) {
        precondition(secret.count >= 32, "the JWT secret must have at least 32 bytes")
        key = secret
    }

    private static let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))

    public func sign(_ claims: Claims) -> String {
        let payload = Base64URL.encode(JSON.encode(claims))
        let input = JWTSigner.header + "." + payload
        return input + "." + Base64URL.encode(Crypto.hmacSHA256(key: key, data: Array(input.utf8)))
    }

    public func verify(_ token: String, now: Int64 = Int64(Date().timeIntervalSince1970)) throws(Failure) -> Claims {
        guard token.utf8.count < 4096 else { throw .malformed }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .malformed }
        // The header this signer writes is accepted as is; any other is parsed and checked.
        if parts[0] != JWTSigner.header {
            guard let headerBytes = Base64URL.decode(parts[0]),
                  let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any]
            else { throw .malformed }
            guard let alg = header["alg"] as? String, alg == "HS256", header["crit"] == nil else { throw .algorithm }
        }
        guard let signature = Base64URL.decode(parts[2]) else { throw .malformed }
        let input = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        guard Crypto.constantTimeEqual(signature, Crypto.hmacSHA256(key: key, data: input)) else { throw .signature }
        guard let payload = Base64URL.decode(parts[1]),
              let claims = try? JSONDecoder().decode(Claims.self, from: Data(payload))
        else { throw .malformed }
        guard claims.exp > now else { throw .expired }
        return claims
    }
}

/// Tokens one thread has verified, with their claims, so a client's next request with the
/// same token skips the base64, HMAC and JSON work. Only a token that passed `verify` is
/// stored, a hit must be the identical string, and the expiry is checked on every hit;
/// the session behind it is still checked in Redis on every request (revocation). Bounded:
/// emptied when full. Not thread-safe: one instance per thread.
public final class VerifiedTokenCache {
    private var claims: [String: JWTSigner.Claims] = [:]
    private let capacity: Int

    public init(capacity: Int = 1024) { self.capacity = capacity }

    public func verify(_ token: String, with signer: JWTSigner, now: Int64 = Int64(Date().timeIntervalSince1970)) throws(JWTSigner.Failure) -> JWTSigner.Claims {
        if let hit = claims[token] {
            guard hit.exp > now else {
                claims[token] = nil
                throw .expired
            }
            return hit
        }
        let verified = try signer.verify(token, now: now)
        if claims.count >= capacity { claims.removeAll(keepingCapacity: true) }
        claims[token] = verified
        return verified
    }
}
