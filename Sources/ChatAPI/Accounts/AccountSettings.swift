import Foundation
import ChatCore

/// Account settings from the config file, decoded once per process.
public struct AccountSettings: Sendable {
    public var hasher: PasswordHasher
    public var sessionTTL: Int
    public var verifyTokenTTL: Int
    public var resetTokenTTL: Int
    public var loginPerEmail: RateLimiter.Rule
    public var loginPerAddress: RateLimiter.Rule
    public var resendPerEmail: RateLimiter.Rule
    public var resetPerEmail: RateLimiter.Rule
    public var emailQueue: Topology.TaskQueue
    public var providers: [OAuthProvider]
    /// A hash to verify against when the email is unknown, so both cases cost the same.
    public let dummyHash: String

    public init(_ config: Config, publicURL: String) throws {
        hasher = PasswordHasher(timeCost: UInt32(try config.int("ARGON2_TIME_COST", default: 2)),
                                memoryKiB: UInt32(try config.int("ARGON2_MEMORY_KIB", default: 19 * 1024)),
                                parallelism: UInt32(try config.int("ARGON2_PARALLELISM", default: 1)))
        guard hasher.memoryKiB >= 19 * 1024, hasher.timeCost >= 2 else {
            throw ConfigError.invalid("ARGON2_MEMORY_KIB/ARGON2_TIME_COST", "below OWASP's minimum (19456 KiB, t=2)")
        }
        sessionTTL = try config.int("SESSION_TTL_SECONDS", default: 30 * 24 * 3600)
        verifyTokenTTL = try config.int("VERIFY_TOKEN_TTL_SECONDS", default: 24 * 3600)
        resetTokenTTL = try config.int("RESET_TOKEN_TTL_SECONDS", default: 3600)
        let window = try config.int("RATE_LIMIT_WINDOW_SECONDS", default: 15 * 60)
        loginPerEmail = .init(name: "login-email", limit: try config.int("RATE_LIMIT_LOGIN_PER_EMAIL", default: 10), windowSeconds: window)
        loginPerAddress = .init(name: "login-addr", limit: try config.int("RATE_LIMIT_LOGIN_PER_ADDRESS", default: 100), windowSeconds: window)
        resendPerEmail = .init(name: "resend", limit: try config.int("RATE_LIMIT_RESEND_PER_EMAIL", default: 5), windowSeconds: 3600)
        resetPerEmail = .init(name: "reset", limit: try config.int("RATE_LIMIT_RESET_PER_EMAIL", default: 5), windowSeconds: 3600)
        emailQueue = Topology.emailQueue(retryDelaysMs: try config.intList("WORKER_RETRY_DELAYS_MS", default: [5000, 30000, 120000]))
        providers = try OAuthProvider.configured(config, publicURL: publicURL)
        dummyHash = try hasher.hash(Crypto.randomToken())
    }
}
