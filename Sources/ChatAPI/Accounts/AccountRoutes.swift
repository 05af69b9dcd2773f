import Foundation
import Logging
import ChatCore

/// Accounts and sessions (API.md): local registration with email verification, login,
/// logout, sessions, password reset, the caller's profile, and OAuth (OAuthRoutes).
public struct AccountRoutes: Sendable {
    let settings: AccountSettings
    let logger = Logger(label: "accounts")

    public init(settings: AccountSettings) { self.settings = settings }

    struct TokenReply: Encodable {
        let token: String
        let expires_at: String
        let user: User
        var created: Bool? = nil
    }

    struct Message: Encodable { let message: String }

    public func register(_ router: inout Router) {
        router.add("POST", "/api/auth/register", auth: .none) { try self.registerUser($0) }
        router.add("GET", "/api/auth/verify-email", auth: .none) { try self.verifyEmail($0) }
        router.add("POST", "/api/auth/resend-verification", auth: .none) { try self.resend($0) }
        router.add("POST", "/api/auth/login", auth: .none) { try self.login($0) }
        router.add("POST", "/api/auth/logout", auth: .user) { try self.logout($0) }
        router.add("GET", "/api/auth/sessions", auth: .user) { try self.listSessions($0) }
        router.add("DELETE", "/api/auth/sessions/{id}", auth: .user) { try self.deleteSession($0) }
        router.add("POST", "/api/auth/password-reset", auth: .none) { try self.requestReset($0) }
        router.add("POST", "/api/auth/password-reset/confirm", auth: .none) { try self.confirmReset($0) }
        router.add("GET", "/api/me", auth: .user) { try self.me($0) }
        router.add("PATCH", "/api/me", auth: .user) { try self.updateMe($0) }
        OAuthRoutes(settings: settings, accounts: self).register(&router)
    }

    // MARK: sessions

    /// Creates the Redis session and its JWT (the session's TTL is the token's lifetime).
    func logIn(_ user: User, _ ctx: RequestContext, created: Bool? = nil) throws -> HTTPReply {
        let sid = try ctx.services.sessions.create(userID: user.id, userAgent: ctx.request.headers["user-agent"] ?? "")
        let now = Int64(Date().timeIntervalSince1970)
        let exp = now + Int64(settings.sessionTTL)
        let token = ctx.services.jwt.sign(.init(sub: user.id, sid: sid, iat: now, exp: exp))
        return .json(TokenReply(token: token, expires_at: Timestamp.format(millis: exp * 1000), user: user, created: created))
    }

    /// Tells the relays to close the sockets of revoked sessions (best effort: a relay
    /// re-checks the session on every new socket anyway).
    func announceRevoked(_ sids: [String], _ ctx: RequestContext) {
        for sid in sids {
            do {
                try ctx.services.amqp.publish(exchange: Topology.eventsExchange, routingKey: "session." + sid,
                                              body: Array(#"{"type":"session.revoked"}"#.utf8), mandatory: false, persistent: false)
            } catch {
                logger.warning("could not announce a revoked session", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Queues an email task; false when the broker is unavailable (the caller decides).
    func enqueue(_ task: EmailTask, _ ctx: RequestContext) -> Bool {
        do {
            try ctx.services.amqp.publish(exchange: "", routingKey: settings.emailQueue.name, body: JSON.encode(task), messageId: task.id)
            return true
        } catch {
            logger.warning("could not queue an email", metadata: ["kind": "\(task.kind ?? "-")", "error": "\(error)"])
            return false
        }
    }

    /// Issues a verification or reset token for the user and queues the email that carries
    /// it; false when the broker is unavailable (the token then simply goes unused).
    func mailToken(_ user: User, _ purpose: UserStore.Purpose, _ ctx: RequestContext) throws -> Bool {
        let ttl = purpose == .verify ? settings.verifyTokenTTL : settings.resetTokenTTL
        let token = try UserStore(db: ctx.services.postgres).issueToken(userID: user.id, purpose: purpose, ttlSeconds: ttl)
        return enqueue(EmailTask(id: Crypto.uuidV4(), kind: purpose == .verify ? "verify_email" : "password_reset",
                                 to: user.email, display_name: user.display_name, token: token), ctx)
    }

    /// resend-verification and password-reset: the same 202 whether or not the account
    /// exists (nothing to enumerate), rate-limited per email.
    func tokenMailRequest(_ ctx: RequestContext, _ rule: RateLimiter.Rule, _ purpose: UserStore.Purpose,
                          eligible: (User) -> Bool, reply: String) throws -> HTTPReply {
        let email = try Validate.email(try ctx.decode(EmailBody.self).email)
        try RateLimiter(redis: ctx.services.redis).reserve(rule, email)
        if let user = try UserStore(db: ctx.services.postgres).byEmail(email)?.user, eligible(user) {
            _ = try mailToken(user, purpose, ctx)
        }
        return .json(Message(message: reply), status: 202)
    }

    // MARK: registration and verification

    struct RegisterBody: Decodable {
        let email: String
        let password: String
        let display_name: String?
    }

    func registerUser(_ ctx: RequestContext) throws -> HTTPReply {
        let body = try ctx.decode(RegisterBody.self)
        let email = try Validate.email(body.email)
        try Validate.password(body.password)
        let name = try Validate.displayName(body.display_name ?? String(email.split(separator: "@")[0]))
        let store = UserStore(db: ctx.services.postgres)
        let hash = try settings.hasher.hash(body.password)
        guard let user = try store.create(email: email, displayName: name, passwordHash: hash) else {
            throw APIError.conflict("email_taken", "An account with this email already exists.")
        }
        let queued = try mailToken(user, .verify, ctx)
        struct Reply: Encodable { let user: User; let message: String; let email_queued: Bool }
        let message = queued
            ? "Registration successful. Please check your email to verify your account."
            : "Registration successful, but the verification email could not be sent yet. Ask for a new one in a few minutes."
        return .json(Reply(user: user, message: message, email_queued: queued), status: 201)
    }

    func verifyEmail(_ ctx: RequestContext) throws -> HTTPReply {
        let token = ctx.request.queryItems["token"] ?? ""
        let store = UserStore(db: ctx.services.postgres)
        let user: User? = try ctx.services.postgres.transaction { _ in
            guard let uid = try store.consumeToken(token, purpose: .verify) else { return nil }
            try store.markVerified(uid)
            return try store.byID(uid)?.user
        }
        guard let user else { throw APIError.badRequest("invalid_token", "This link is invalid, already used or expired.") }
        return try logIn(user, ctx)
    }

    struct EmailBody: Decodable { let email: String }

    func resend(_ ctx: RequestContext) throws -> HTTPReply {
        try tokenMailRequest(ctx, settings.resendPerEmail, .verify, eligible: { !$0.email_verified },
                             reply: "If an unverified account exists for this address, a new verification email is on its way.")
    }

    // MARK: login and logout

    struct LoginBody: Decodable {
        let email: String
        let password: String
    }

    func login(_ ctx: RequestContext) throws -> HTTPReply {
        let body = try ctx.decode(LoginBody.self)
        let invalid = APIError(401, "invalid_credentials", "Email or password is wrong.")
        let email = try Validate.email(body.email)
        guard body.password.unicodeScalars.count <= 256 else { throw invalid }
        let limiter = RateLimiter(redis: ctx.services.redis)
        // Attempts are counted before the password is checked (INCR is atomic), so a
        // concurrent burst cannot get more than the limit through; a success is refunded.
        try limiter.reserve(settings.loginPerEmail, email, code: "too_many_attempts")
        try limiter.reserve(settings.loginPerAddress, ctx.request.remoteAddress, code: "too_many_attempts")
        let store = UserStore(db: ctx.services.postgres)
        let row = try store.byEmail(email)
        let ok = settings.hasher.verify(body.password, encoded: row?.passwordHash ?? settings.dummyHash) && row?.passwordHash != nil
        guard ok, let row else { throw invalid }
        try limiter.refund(settings.loginPerEmail, email)
        try limiter.refund(settings.loginPerAddress, ctx.request.remoteAddress)
        guard row.user.email_verified else {
            throw APIError.forbidden("email_not_verified", "Verify your email address first: check your inbox for the link.")
        }
        if let hash = row.passwordHash, settings.hasher.needsRehash(hash) {
            try store.setPassword(row.user.id, hash: try settings.hasher.hash(body.password))
        }
        return try logIn(row.user, ctx)
    }

    func logout(_ ctx: RequestContext) throws -> HTTPReply {
        let me = try ctx.user
        try ctx.services.sessions.revoke(me.sessionID, userID: me.userID)
        announceRevoked([me.sessionID], ctx)
        return .noContent()
    }

    func listSessions(_ ctx: RequestContext) throws -> HTTPReply {
        let me = try ctx.user
        struct Item: Encodable { let id, created_at, last_seen_at, user_agent: String; let current: Bool }
        struct Reply: Encodable { let sessions: [Item] }
        let items = try ctx.services.sessions.list(userID: me.userID).map {
            Item(id: $0.id, created_at: $0.createdAt, last_seen_at: $0.lastSeenAt, user_agent: $0.userAgent, current: $0.id == me.sessionID)
        }
        return .json(Reply(sessions: items))
    }

    func deleteSession(_ ctx: RequestContext) throws -> HTTPReply {
        let me = try ctx.user
        let sid = ctx.param("id")
        guard try ctx.services.sessions.revoke(sid, userID: me.userID) else {
            throw APIError.notFound("not_found", "No such session.")
        }
        announceRevoked([sid], ctx)
        return .noContent()
    }

    // MARK: password reset

    func requestReset(_ ctx: RequestContext) throws -> HTTPReply {
        try tokenMailRequest(ctx, settings.resetPerEmail, .reset, eligible: { _ in true },
                             reply: "If an account exists for this address, a reset email is on its way.")
    }

    struct ResetBody: Decodable {
        let token: String
        let password: String
    }

    func confirmReset(_ ctx: RequestContext) throws -> HTTPReply {
        let body = try ctx.decode(ResetBody.self)
        try Validate.password(body.password)
        let store = UserStore(db: ctx.services.postgres)
        let hash = try settings.hasher.hash(body.password)
        let uid: String? = try ctx.services.postgres.transaction { _ in
            guard let uid = try store.consumeToken(body.token, purpose: .reset) else { return nil }
            try store.setPassword(uid, hash: hash)
            // The reset link proved ownership of the address.
            try store.markVerified(uid)
            return uid
        }
        guard let uid else { throw APIError.badRequest("invalid_token", "This link is invalid, already used or expired.") }
        let revoked = try ctx.services.sessions.revokeAll(userID: uid)
        announceRevoked(revoked, ctx)
        return .noContent()
    }

    // MARK: profile

    func me(_ ctx: RequestContext) throws -> HTTPReply {
        guard let row = try UserStore(db: ctx.services.postgres).byID(try ctx.user.userID) else { throw APIError.unauthorized }
        return .json(row.user)
    }

    func updateMe(_ ctx: RequestContext) throws -> HTTPReply {
        struct Body: Decodable { let display_name: String }
        let name = try Validate.displayName(try ctx.decode(Body.self).display_name)
        guard let user = try UserStore(db: ctx.services.postgres).setDisplayName(try ctx.user.userID, name) else {
            throw APIError.unauthorized
        }
        return .json(user)
    }
}
