import Foundation
import Logging
import ChatCore

/// One configured OAuth provider. URLs default to the real providers'; tests point them
/// at a local stand-in. The redirect URI is always built from PUBLIC_URL (never from a
/// request), one distinct path per provider.
public struct OAuthProvider: Sendable, Equatable {
    public static let known = ["google", "github", "yandex"]

    public let name: String
    public let clientID: String
    public let clientSecret: String
    public let authorizeURL: String
    public let tokenURL: String
    public let userinfoURL: String
    public let emailsURL: String?
    public let scope: String
    public let redirectURI: String

    static let defaults: [String: (authorize: String, token: String, userinfo: String, emails: String?, scope: String)] = [
        "google": ("https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token",
                   "https://openidconnect.googleapis.com/v1/userinfo", nil, "openid email profile"),
        "github": ("https://github.com/login/oauth/authorize", "https://github.com/login/oauth/access_token",
                   "https://api.github.com/user", "https://api.github.com/user/emails", "read:user user:email"),
        "yandex": ("https://oauth.yandex.ru/authorize", "https://oauth.yandex.ru/token",
                   "https://login.yandex.ru/info", nil, "login:email login:info"),
    ]

    /// The providers whose client id and secret are set (OAUTH_<NAME>_CLIENT_ID / _CLIENT_SECRET).
    public static func configured(_ config: Config, publicURL: String) throws -> [OAuthProvider] {
        try known.compactMap { name in
            let p = "OAUTH_\(name.uppercased())_"
            guard let id = config[p + "CLIENT_ID"], let secret = config[p + "CLIENT_SECRET"] else { return nil }
            let d = defaults[name]!
            let authorize = config.string(p + "AUTHORIZE_URL", default: d.authorize)
            for url in [authorize, config.string(p + "TOKEN_URL", default: d.token)] where URLComponents(string: url)?.host == nil {
                throw ConfigError.invalid(p + "URLS", url)
            }
            return OAuthProvider(name: name, clientID: id, clientSecret: secret, authorizeURL: authorize,
                                 tokenURL: config.string(p + "TOKEN_URL", default: d.token),
                                 userinfoURL: config.string(p + (name == "github" ? "USER_URL" : "USERINFO_URL"), default: d.userinfo),
                                 emailsURL: d.emails.map { config.string(p + "EMAILS_URL", default: $0) },
                                 scope: config.string(p + "SCOPE", default: d.scope),
                                 redirectURI: publicURL + "/auth/\(name)/callback")
        }
    }

    /// The authorize URL with client_id, redirect_uri, scope, state and the PKCE S256 challenge.
    public func authorizationURL(state: String, codeChallenge: String) -> String {
        var c = URLComponents(string: authorizeURL)!
        var items = c.queryItems ?? []
        items += [
            URLQueryItem(name: "response_type", value: "code"),
            URLQueryItem(name: "client_id", value: clientID),
            URLQueryItem(name: "redirect_uri", value: redirectURI),
            URLQueryItem(name: "scope", value: scope),
            URLQueryItem(name: "state", value: state),
            URLQueryItem(name: "code_challenge", value: codeChallenge),
            URLQueryItem(name: "code_challenge_method", value: "S256"),
        ]
        c.queryItems = items
        // URLComponents leaves '+' unescaped in queries; providers read it as a space.
        c.percentEncodedQuery = c.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        return c.string!
    }

    public static func codeChallenge(_ verifier: String) -> String { Base64URL.encode(Crypto.sha256(Array(verifier.utf8))) }
}

/// What a provider says about the person who logged in.
struct ProviderIdentity {
    let subject: String
    let email: String
    let emailVerified: Bool
    let name: String
}

/// The provider's HTTP side: code exchange and user info, in each provider's own shapes.
struct OAuthClient {
    let provider: OAuthProvider

    static let providerError = APIError(502, "provider_error", "The sign-in provider did not accept the login; try again.")

    private func json(_ response: HTTPResponse) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(response.body))
    }

    func exchange(code: String, verifier: String) throws -> String {
        let response: HTTPResponse
        do {
            response = try Curl.postForm(provider.tokenURL, fields: [
                ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", provider.redirectURI),
                ("client_id", provider.clientID), ("client_secret", provider.clientSecret), ("code_verifier", verifier),
            ], headers: ["Accept": "application/json", "User-Agent": "swiftchat"], timeoutMs: 10_000)
        } catch {
            throw OAuthClient.providerError
        }
        // GitHub reports a rejected code as 200 with an "error" field.
        guard response.status == 200, let body = json(response) as? [String: Any], body["error"] == nil,
              let token = body["access_token"] as? String, !token.isEmpty else {
            throw OAuthClient.providerError
        }
        return token
    }

    private func get(_ url: String, authorization: String) throws -> Any {
        let response: HTTPResponse
        do {
            response = try Curl.get(url, headers: ["Authorization": authorization, "Accept": "application/json",
                                                   "User-Agent": "swiftchat"], timeoutMs: 10_000)
        } catch {
            throw OAuthClient.providerError
        }
        guard response.status == 200, let body = json(response) else { throw OAuthClient.providerError }
        return body
    }

    func identity(accessToken: String) throws -> ProviderIdentity {
        switch provider.name {
        case "google":
            guard let info = try get(provider.userinfoURL, authorization: "Bearer " + accessToken) as? [String: Any],
                  let sub = info["sub"] as? String, let email = info["email"] as? String else { throw OAuthClient.providerError }
            let verified = (info["email_verified"] as? Bool) ?? ((info["email_verified"] as? String) == "true")
            return ProviderIdentity(subject: sub, email: email, emailVerified: verified, name: (info["name"] as? String) ?? "")
        case "github":
            guard let user = try get(provider.userinfoURL, authorization: "Bearer " + accessToken) as? [String: Any],
                  let id = (user["id"] as? NSNumber)?.int64Value,
                  let emails = try get(provider.emailsURL!, authorization: "Bearer " + accessToken) as? [[String: Any]]
            else { throw OAuthClient.providerError }
            // Only the primary email, and only when GitHub has verified it.
            let primary = emails.first { ($0["primary"] as? Bool) == true }
            let name = (user["name"] as? String) ?? (user["login"] as? String) ?? ""
            return ProviderIdentity(subject: String(id), email: (primary?["email"] as? String) ?? "",
                                    emailVerified: (primary?["verified"] as? Bool) == true, name: name)
        default: // yandex
            var url = provider.userinfoURL
            if !url.contains("format=") { url += (url.contains("?") ? "&" : "?") + "format=json" }
            guard let info = try get(url, authorization: "OAuth " + accessToken) as? [String: Any],
                  let id = (info["id"] as? String) ?? (info["id"] as? NSNumber)?.stringValue else { throw OAuthClient.providerError }
            let email = (info["default_email"] as? String) ?? ""
            // Yandex documents no verified flag; a Yandex account's default_email is one the
            // account controls (see docs/security.md for the decision and its risk).
            return ProviderIdentity(subject: id, email: email, emailVerified: !email.isEmpty,
                                    name: (info["display_name"] as? String) ?? (info["real_name"] as? String) ?? (info["login"] as? String) ?? "")
        }
    }
}

/// GET /api/auth/providers, /api/auth/{provider} and its callback.
struct OAuthRoutes: Sendable {
    let settings: AccountSettings
    let accounts: AccountRoutes
    let logger = Logger(label: "oauth")
    static let stateTTL = 600

    func register(_ router: inout Router) {
        router.add("GET", "/api/auth/providers", auth: .none) { _ in
            struct Reply: Encodable { let providers: [String] }
            return .json(Reply(providers: self.settings.providers.map(\.name)))
        }
        router.add("GET", "/api/auth/{provider}", auth: .none) { try self.start($0) }
        router.add("GET", "/api/auth/{provider}/callback", auth: .none) { try self.callback($0) }
    }

    func provider(_ ctx: RequestContext) throws -> OAuthProvider {
        try configured(knownProvider(ctx))
    }

    /// The path's provider name: 404 `unknown_provider` unless google, yandex or github.
    func knownProvider(_ ctx: RequestContext) throws -> String {
        let name = ctx.param("provider")
        guard OAuthProvider.known.contains(name) else { throw APIError.notFound("unknown_provider", "There is no such sign-in provider.") }
        return name
    }

    /// The settings of a known provider: 503 `provider_not_configured` without them.
    func configured(_ name: String) throws -> OAuthProvider {
        guard let p = settings.providers.first(where: { $0.name == name }) else {
            throw APIError(503, "provider_not_configured", "Sign-in with \(name) is not configured on this server.", headers: ["Retry-After": "3600"])
        }
        return p
    }

    struct StateRecord: Codable {
        let provider: String
        let verifier: String
    }

    func start(_ ctx: RequestContext) throws -> HTTPReply {
        let p = try provider(ctx)
        let state = Crypto.randomToken(bytes: 32)
        let verifier = Crypto.randomToken(bytes: 32)
        // The state is single use, expires in 10 minutes and is bound to its PKCE verifier.
        try ctx.services.redis.command("SET", "oauth_state:" + state, JSON.encode(StateRecord(provider: p.name, verifier: verifier)),
                                       "EX", OAuthRoutes.stateTTL)
        struct Reply: Encodable { let url: String }
        return .json(Reply(url: p.authorizationURL(state: state, codeChallenge: OAuthProvider.codeChallenge(verifier))))
    }

    func callback(_ ctx: RequestContext) throws -> HTTPReply {
        // The state first: an unknown one is 400 invalid_state whether or not this server
        // has the provider configured (only a state issued by `start` gets further).
        let name = try knownProvider(ctx)
        let q = ctx.request.queryItems
        let invalidState = APIError.badRequest("invalid_state", "This sign-in attempt is unknown, already used or expired; start again.")
        guard let state = q["state"], !state.isEmpty, state.count <= 128 else { throw invalidState }
        // GETDEL: the first callback with a state takes it; any other gets nothing.
        guard let raw = try ctx.services.redis.command("GETDEL", "oauth_state:" + state).string,
              let record = try? JSONDecoder().decode(StateRecord.self, from: Data(raw.utf8)),
              record.provider == name else { throw invalidState }
        // Configured when the state was issued; 503 if the settings lost it since.
        let p = try configured(name)
        guard let code = q["code"], !code.isEmpty else {
            // The user refused at the provider (error=access_denied) or the provider failed.
            throw OAuthClient.providerError
        }
        let client = OAuthClient(provider: p)
        let identity = try client.identity(accessToken: try client.exchange(code: code, verifier: record.verifier))
        guard identity.emailVerified, let email = try? Validate.email(identity.email) else {
            throw APIError.badRequest("email_not_verified_by_provider", "The provider has not verified this account's email address.")
        }
        let (user, created) = try link(identity, email: email, provider: p.name, ctx)
        return try accounts.logIn(user, ctx, created: created)
    }

    /// Finds or creates the user of a provider identity: the identity itself, else the
    /// account with the same email (an unverified local account is taken over: verified,
    /// its password cleared so a squatter's password never opens it), else a new user.
    func link(_ id: ProviderIdentity, email: String, provider: String, _ ctx: RequestContext) throws -> (User, Bool) {
        let db = ctx.services.postgres
        let store = UserStore(db: db)
        return try db.transaction { db in
            if let uid = try db.query("SELECT user_id::text AS user_id FROM oauth_identities WHERE provider = $1 AND subject = $2",
                                      [provider, id.subject]).first.map({ try $0.string("user_id") }),
               let row = try store.byID(uid) {
                return (row.user, false)
            }
            var created = false
            var user: User
            // Lock the row so a concurrent login with the same email cannot race the take-over.
            if let existing = try db.query("SELECT id::text AS id FROM users WHERE email_lower = lower($1) FOR UPDATE", [email]).first,
               let row = try store.byID(try existing.string("id")) {
                user = row.user
                if !row.user.email_verified {
                    try store.setPassword(user.id, hash: nil)
                    try store.markVerified(user.id)
                    try db.query("UPDATE email_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL", [user.id])
                    user = try store.byID(user.id)!.user
                    logger.info("unverified local account taken over by a provider identity", metadata: ["provider": "\(provider)"])
                }
            } else {
                let name = (try? Validate.displayName(id.name)) ?? String(email.split(separator: "@")[0].prefix(64))
                guard let u = try store.create(email: email, displayName: name, passwordHash: nil, verified: true) else {
                    throw APIError.conflict("email_taken", "An account with this email was just created; try again.")
                }
                user = u
                created = true
            }
            try db.query("INSERT INTO oauth_identities (provider, subject, user_id, email) VALUES ($1, $2, $3, $4)",
                         [provider, id.subject, user.id, email])
            return (user, created)
        }
    }
}
