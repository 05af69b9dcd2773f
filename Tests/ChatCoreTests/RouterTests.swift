import Foundation
import Testing
@testable import ChatAPI
@testable import ChatCore

@Suite struct RouterTests {
    func router() -> Router {
        var r = Router()
        let ok: Handler = { _ in .noContent() }
        r.add("POST", "/api/auth/login", auth: .none, ok)
        r.add("GET", "/api/auth/providers", auth: .none, ok)
        r.add("GET", "/api/auth/{provider}", auth: .none, ok)
        r.add("GET", "/api/auth/{provider}/callback", auth: .none, ok)
        r.add("GET", "/api/rooms/{id}", auth: .user, ok)
        r.add("GET", "/api/rooms/public", auth: .user, ok)
        r.add("GET", "/api/rooms/{id}/messages", auth: .user, ok)
        r.add("POST", "/api/rooms/{id}/messages", auth: .user, ok)
        return r
    }

    @Test func literalSegmentsBeatParameters() {
        guard case .matched(let route, let params) = router().resolve(method: "GET", path: "/api/auth/providers") else {
            Issue.record("no match"); return
        }
        #expect(route.pattern == "/api/auth/providers" && params.isEmpty)
        guard case .matched(let r2, _) = router().resolve(method: "GET", path: "/api/rooms/public") else { Issue.record("public"); return }
        #expect(r2.pattern == "/api/rooms/public")
    }

    @Test func literalPathsResolveLikeTheSegmentMatcher() {
        // An exact literal path takes the fast lookup; a percent-encoded spelling of it,
        // HEAD, other methods and a trailing slash still behave as before.
        guard case .matched(let r1, _) = router().resolve(method: "GET", path: "/api/rooms/p%75blic") else { Issue.record("encoded"); return }
        #expect(r1.pattern == "/api/rooms/public")
        guard case .matched(let r2, _) = router().resolve(method: "HEAD", path: "/api/auth/providers") else { Issue.record("HEAD"); return }
        #expect(r2.pattern == "/api/auth/providers" && r2.method == "GET")
        guard case .methodNotAllowed(let allowed) = router().resolve(method: "DELETE", path: "/api/rooms/public") else { Issue.record("405"); return }
        #expect(allowed == ["GET"])
        guard case .notFound = router().resolve(method: "GET", path: "/api/rooms/public/") else { Issue.record("trailing slash"); return }
    }

    @Test func parametersArePercentDecoded() {
        guard case .matched(let route, let params) = router().resolve(method: "GET", path: "/api/auth/git%68ub/callback") else {
            Issue.record("no match"); return
        }
        #expect(route.pattern == "/api/auth/{provider}/callback" && params["provider"] == "github")
    }

    @Test func knownPathWithOtherMethodIs405() {
        guard case .methodNotAllowed(let allowed) = router().resolve(method: "GET", path: "/api/auth/login") else {
            Issue.record("expected 405"); return
        }
        #expect(allowed == ["POST"])
        guard case .methodNotAllowed(let a2) = router().resolve(method: "DELETE", path: "/api/rooms/1/messages") else {
            Issue.record("expected 405"); return
        }
        #expect(a2 == ["GET", "POST"])
    }

    @Test func unknownPathsAre404() {
        for path in ["/api/nope", "/api/rooms/1/", "/api/rooms//messages", "/api/rooms/a%2Fb", "/api"] {
            guard case .notFound = router().resolve(method: "GET", path: path) else { Issue.record("\(path) matched"); continue }
        }
    }
}

/// The application in-process: routing, content types and the error envelope, without
/// touching any dependency (the connections are lazy and /api/ping uses none).
@Suite struct ApplicationTests {
    func app() throws -> APIApplication {
        let settings = try ServiceSettings(Config(values: ["JWT_SECRET": String(repeating: "ab", count: 32),
                                                           "REDIS_PORT": "1", "AMQP_URL": "amqp://127.0.0.1:1/"]))
        let mongo = try MongoPool(url: "mongodb://127.0.0.1:1/", database: "t")
        let services = try ThreadServices(settings: settings, mongo: mongo, emailQueue: Topology.emailQueue(retryDelaysMs: [1]), sessionTTL: 60)
        var router = Router()
        SystemRoutes.register(&router)
        router.add("POST", "/api/echo", auth: .none) { ctx in
            struct In: Codable { let text: String }
            return .json(try ctx.decode(In.self))
        }
        router.add("GET", "/api/secret", auth: .user) { _ in .noContent() }
        return APIApplication(router: router, services: [services])
    }

    func body(_ reply: HTTPReply) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(reply.body))) as? [String: Any] ?? [:]
    }

    func code(_ reply: HTTPReply) -> String? { (body(reply)["error"] as? [String: Any])?["code"] as? String }

    @Test func pingAnswersJSON() throws {
        let r = try app().handle(thread: 0, HTTPRequest(method: "GET", path: "/api/ping"))
        #expect(r.status == 200 && body(r)["pong"] as? Bool == true)
    }

    @Test func errorsUseTheEnvelope() throws {
        let a = try app()
        #expect(code(a.handle(thread: 0, HTTPRequest(method: "GET", path: "/api/nothing"))) == "not_found")
        let r405 = a.handle(thread: 0, HTTPRequest(method: "DELETE", path: "/api/ping"))
        #expect(r405.status == 405 && code(r405) == "method_not_allowed")
        #expect(r405.headers.contains { $0.0 == "Allow" && $0.1 == "GET" })
        let r415 = a.handle(thread: 0, HTTPRequest(method: "POST", path: "/api/echo", headers: ["content-type": "text/plain"], body: Array("hi".utf8)))
        #expect(r415.status == 415 && code(r415) == "unsupported_media_type")
        let r400 = a.handle(thread: 0, HTTPRequest(method: "POST", path: "/api/echo", headers: ["content-type": "application/json; charset=utf-8"], body: Array("{".utf8)))
        #expect(r400.status == 400 && code(r400) == "invalid_json")
        let ok = a.handle(thread: 0, HTTPRequest(method: "POST", path: "/api/echo", headers: ["content-type": "application/json"], body: Array(#"{"text":"hé"}"#.utf8)))
        #expect(ok.status == 200 && body(ok)["text"] as? String == "hé")
    }

    @Test func protectedRoutesNeedAValidToken() throws {
        let a = try app()
        #expect(a.handle(thread: 0, HTTPRequest(method: "GET", path: "/api/secret")).status == 401)
        let bad = a.handle(thread: 0, HTTPRequest(method: "GET", path: "/api/secret", headers: ["authorization": "Bearer x.y.z"]))
        #expect(bad.status == 401 && code(bad) == "unauthorized")
        // A well-signed token whose session cannot be checked (Redis unreachable): 503 naming redis.
        let signer = JWTSigner(secret: Hex.decode(String(repeating: "ab", count: 32))!)
        let token = signer.sign(.init(sub: "u", sid: "s", iat: 0, exp: Int64(Date().timeIntervalSince1970) + 60))
        let down = a.handle(thread: 0, HTTPRequest(method: "GET", path: "/api/secret", headers: ["authorization": "Bearer \(token)"]))
        #expect(down.status == 503 && code(down) == "redis_unavailable")
        #expect(down.headers.contains { $0.0 == "Retry-After" })
    }
}

@Suite struct AccountRulesTests {
    @Test func emails() throws {
        #expect(try Validate.email("  Alice@Example.org ") == "Alice@Example.org")
        for bad in ["", "no-at", "a@b", "@b.org", "a@.org", "a@b..org", "a b@c.org", "a@b.org\u{0}", "<a@b.org>",
                    String(repeating: "a", count: 65) + "@b.org", "a@" + String(repeating: "b", count: 250) + ".org"] {
            #expect(throws: APIError.self) { try Validate.email(bad) }
        }
    }

    @Test func passwordsAndNames() throws {
        #expect(throws: APIError.badRequest("weak_password", "The password needs 8 to 256 characters.")) { try Validate.password("1234567") }
        try Validate.password("12345678")
        try Validate.password(String(repeating: "é", count: 256))
        #expect(throws: APIError.self) { try Validate.password(String(repeating: "x", count: 257)) }
        #expect(try Validate.displayName("  Ann  ") == "Ann")
        #expect(throws: APIError.self) { try Validate.displayName("   ") }
        #expect(throws: APIError.self) { try Validate.displayName(String(repeating: "x", count: 65)) }
        #expect(try Validate.displayName(String(repeating: "ж", count: 64)).count == 64)
    }

    @Test func pkceChallengeIsS256OfTheVerifier() {
        // RFC 7636 appendix B.
        #expect(OAuthProvider.codeChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    }

    @Test func providersComeFromConfigWithRedirectURIsFromThePublicURL() throws {
        let config = Config(values: ["OAUTH_GITHUB_CLIENT_ID": "id", "OAUTH_GITHUB_CLIENT_SECRET": "s",
                                     "OAUTH_GOOGLE_CLIENT_ID": "only-id"])
        let ps = try OAuthProvider.configured(config, publicURL: "https://chat.example.org")
        #expect(ps.map(\.name) == ["github"])
        let gh = ps[0]
        #expect(gh.redirectURI == "https://chat.example.org/auth/github/callback")
        #expect(gh.tokenURL == "https://github.com/login/oauth/access_token")
        let url = URLComponents(string: gh.authorizationURL(state: "st", codeChallenge: "ch"))!
        let q = Dictionary(uniqueKeysWithValues: url.queryItems!.map { ($0.name, $0.value ?? "") })
        #expect(url.host == "github.com")
        #expect(q["client_id"] == "id" && q["state"] == "st" && q["code_challenge"] == "ch" && q["code_challenge_method"] == "S256")
        #expect(q["redirect_uri"] == "https://chat.example.org/auth/github/callback" && q["response_type"] == "code")
    }

    @Test func emailTemplatesBuildLinksFromThePublicURLAndEscapeNames() throws {
        let task = EmailTask(id: "t", kind: "verify_email", to: "a@b.org", display_name: "<b>Eve</b>", token: "abc_-1")
        let r = try #require(EmailTemplates.render(task, publicURL: "https://chat.example.org"))
        #expect(r.text.contains("https://chat.example.org/verify-email?token=abc_-1"))
        #expect(r.html!.contains("&lt;b&gt;Eve&lt;/b&gt;") && !r.html!.contains("<b>Eve"))
        let reset = try #require(EmailTemplates.render(EmailTask(id: "t", kind: "password_reset", to: "a@b.org", token: "x"), publicURL: "https://c.org"))
        #expect(reset.text.contains("https://c.org/reset-password?token=x"))
        #expect(EmailTemplates.render(EmailTask(id: "t", kind: "verify_email", to: "a@b.org"), publicURL: "https://c.org") == nil)
        #expect(EmailTemplates.render(EmailTask(id: "t", kind: "nope", to: "a@b.org"), publicURL: "https://c.org") == nil)
    }
}

@Suite struct LengthBoundTests {
    @Test func rawBoundIsFourScalarsPerCharacter() {
        #expect(Validate.fitsRaw(String(repeating: "a", count: 256), characters: 64))
        #expect(!Validate.fitsRaw(String(repeating: "a", count: 257), characters: 64))
        // One character of many combining marks is counted by its scalars.
        #expect(!Validate.fitsRaw("a" + String(repeating: "\u{0301}", count: 300), characters: 64))
    }

    @Test func displayNameNeedsBothBounds() throws {
        #expect(try Validate.displayName(String(repeating: "e\u{0301}", count: 64)).count == 64)
        #expect(throws: APIError.self) { try Validate.displayName("Z" + String(repeating: "\u{0336}", count: 300)) }
        #expect(throws: APIError.self) { try Validate.displayName(String(repeating: " ", count: 300) + "n") }
    }
}

@Suite struct MessageEncodingTests {
    static let samples: [Message] = [
        Message(id: "m1", room_id: "r1", seq: 7, author_id: "a1", body: "plain", created_at: "2026-11-25T20:00:00.000Z",
                edited_at: nil, deleted: false, client_id: nil),
        Message(id: "m2", room_id: "r1", seq: 3_000_000_000, author_id: "a1",
                body: "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é 😀 </script>",
                created_at: "2026-11-25T20:00:00.000Z", edited_at: "2026-11-25T20:00:01.000Z", deleted: true, client_id: "c-1"),
    ]

    func object(_ bytes: [UInt8]) throws -> NSDictionary {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? NSDictionary)
    }

    @Test func handWrittenJSONEqualsTheEncoder() throws {
        for m in Self.samples {
            #expect(try object(m.json) == (try object(JSON.encode(m))))
            let event = m.event("message.created", json: m.json)
            #expect(try object(event) == (try object(JSON.encode(Events.MessageEvent(type: "message.created", room_id: m.room_id, message: m)))))
        }
    }

    @Test func storedDocumentRoundTrips() throws {
        for m in Self.samples {
            let doc = m.document(createdMillis: 1_764_100_800_123)
            let obj = try object(Array(doc.utf8))
            #expect(obj["_id"] as? String == m.id && obj["created_ms"] as? Int64 == 1_764_100_800_123)
            #expect((obj["client_id"] == nil) == (m.client_id == nil))
            #expect(try Message.from(document: doc) == m)
        }
    }

    @Test func quoteEscapesOnlyWhatJSONNeeds() throws {
        for s in ["", "plain ascii", "é 😀", "a\"b\\c\nd\u{1}e"] {
            let quoted = JSON.quote(s)
            #expect(try JSONSerialization.jsonObject(with: Data(quoted.utf8), options: .fragmentsAllowed) as? String == s)
        }
        #expect(JSON.quote("plain") == "\"plain\"")
    }
}
