import Foundation
import Testing
@testable import ChatCore

@Suite struct ConfigTests {
    @Test func parsesKeyValueLinesCommentsAndQuotes() throws {
        let values = try Config.parse("""
            # comment
            PUBLIC_URL=https://chat.example.org

            PG_CONNINFO="host=/run/postgresql dbname=swiftchat"
            EMPTY=
            """)
        #expect(values["PUBLIC_URL"] == "https://chat.example.org")
        #expect(values["PG_CONNINFO"] == "host=/run/postgresql dbname=swiftchat")
        #expect(values["EMPTY"] == "")
        #expect(Config(values: values)["EMPTY"] == nil)
    }

    @Test func rejectsLinesWithoutEquals() {
        #expect(throws: ConfigError.self) { try Config.parse("JUST_A_WORD") }
        #expect(throws: ConfigError.self) { try Config.parse("lower=case") }
    }

    @Test func environmentOverridesFileButOnlyForConfigKeys() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("swiftchat.conf").path
        try "REDIS_PORT=6379\nMONGO_DB=a\n".write(toFile: path, atomically: true, encoding: .utf8)
        let config = try Config.load(environment: ["SWIFTCHAT_CONFIG": path, "REDIS_PORT": "7000", "path": "/bin"])
        #expect(config["REDIS_PORT"] == "7000")
        #expect(config["MONGO_DB"] == "a")
        #expect(config["path"] == nil)
        #expect(try config.int("REDIS_PORT", default: 1) == 7000)
        #expect(try config.intList("X", default: [1, 2]) == [1, 2])
    }

    @Test func missingExplicitConfigFileIsAnError() {
        #expect(throws: ConfigError.self) { try Config.load(environment: ["SWIFTCHAT_CONFIG": "/nonexistent/swiftchat.conf"]) }
    }

    @Test func settingsRequireAStrongJWTSecret() throws {
        #expect(throws: ConfigError.self) { try ServiceSettings(Config(values: ["JWT_SECRET": "abcd"])) }
        let s = try ServiceSettings(Config(values: ["JWT_SECRET": String(repeating: "ab", count: 32), "PUBLIC_URL": "https://x.org/"]))
        #expect(s.jwtSecret.count == 32)
        #expect(s.publicURL == "https://x.org")
    }

    @Test func amqpURLParsing() throws {
        let e = try AMQPEndpoint(url: "amqp://user:p%40ss@127.0.0.1:5673/%2f")
        #expect(e.host == "127.0.0.1" && e.port == 5673 && e.user == "user" && e.password == "p@ss" && e.vhost == "/")
        let v = try AMQPEndpoint(url: "amqp://h/chat")
        #expect(v.vhost == "chat" && v.port == 5672 && v.user == "guest")
        #expect(throws: ConfigError.self) { try AMQPEndpoint(url: "http://h/") }
    }
}

@Suite struct EncodingTests {
    @Test func hexRoundTrip() {
        #expect(Hex.encode([0, 1, 0xab, 0xff]) == "0001abff")
        #expect(Hex.decode("0001ABff") == [0, 1, 0xab, 0xff])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("zz") == nil)
    }

    @Test func base64URLIsStrict() {
        #expect(Base64URL.encode(Array("hi?>".utf8)) == "aGk_Pg")
        #expect(Base64URL.decode("aGk_Pg") == Array("hi?>".utf8))
        #expect(Base64URL.decode("aGk/Pg==") == nil)
        #expect(Base64URL.decode("a") == nil)
        // Stray bits in the last character would give a second spelling of the same bytes.
        #expect(Base64URL.decode("aGk_Ph") == nil)
        // Every length against Foundation's base64 with the URL alphabet and no padding.
        for n in 0...40 {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255) }
            let expected = Data(bytes).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(Base64URL.encode(bytes) == expected)
            #expect(Base64URL.decode(Substring(expected)) == bytes)
        }
    }

    @Test func trimmingWhitespaceMatchesFoundation() {
        let samples = ["", " ", "a", " a ", "\t\n a b \r\n", "\u{00A0}x\u{3000}", "\u{2028}y\u{2029}", "\u{85}z\u{1680}",
                       "\u{200B}zero-width is not white space\u{200B}", " \u{301}combining", "é 😀 ", "\u{2000}\u{200A}\u{202F}\u{205F}"]
        for s in samples {
            #expect(s.trimmingWhitespace == s.trimmingCharacters(in: .whitespacesAndNewlines), "\(s.unicodeScalars.map { $0.value })")
        }
        // Every scalar of the Basic Multilingual Plane, around a letter.
        var differ: [UInt32] = []
        for v in UInt32(0)..<0x10000 {
            guard let c = Unicode.Scalar(v) else { continue }
            let s = "\(Character(c))x\(Character(c))"
            if s.trimmingWhitespace != s.trimmingCharacters(in: .whitespacesAndNewlines) { differ.append(v) }
        }
        #expect(differ.isEmpty, "\(differ.prefix(10))")
    }

    @Test func timestampsAreRFC3339WithMilliseconds() {
        #expect(Timestamp.format(millis: 1_795_611_662_345) == "2026-11-25T13:01:02.345Z")
        #expect(Timestamp.format(millis: 0) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp.format(millis: 253_402_300_799_999) == "9999-12-31T23:59:59.999Z")
        #expect(Timestamp.format(millis: 1_000_000_000_007) == "2001-09-09T01:46:40.007Z")
    }

    @Test func errorEnvelope() throws {
        let e = APIError(401, "invalid_credentials", "Email or password is wrong.")
        let obj = try JSONSerialization.jsonObject(with: Data(e.body)) as! [String: [String: String]]
        #expect(obj == ["error": ["code": "invalid_credentials", "message": "Email or password is wrong."]])
        #expect(APIError.methodNotAllowed(["GET", "POST"]).headers["Allow"] == "GET, POST")
        #expect(APIError.unavailable("postgresql").code == "postgresql_unavailable")
    }

    @Test func bodyDecodingNamesTheProblem() {
        struct Login: Decodable { let email: String; let password: String }
        #expect(throws: APIError.badRequest("invalid_json", "The request body is not valid JSON.")) {
            try JSON.decodeBody(Login.self, from: Array("{nope".utf8))
        }
        #expect(throws: APIError.badRequest("invalid_field", "Field email has the wrong type.")) {
            try JSON.decodeBody(Login.self, from: Array(#"{"email": 5, "password": "x"}"#.utf8))
        }
        #expect(throws: APIError.badRequest("missing_field", "Field password is required.")) {
            try JSON.decodeBody(Login.self, from: Array(#"{"email": "a@b"}"#.utf8))
        }
        #expect(throws: APIError.badRequest("invalid_json", "The request needs a JSON body.")) {
            try JSON.decodeBody(Login.self, from: [])
        }
    }
}

@Suite struct CryptoTests {
    @Test func sha256KnownVector() {
        #expect(Crypto.sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func hmacSHA256RFC4231Case2() {
        let mac = Crypto.hmacSHA256(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8))
        #expect(Hex.encode(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func constantTimeEqual() {
        #expect(Crypto.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!Crypto.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!Crypto.constantTimeEqual([1, 2], [1, 2, 3]))
    }

    @Test func randomTokensAreLongAndDistinct() {
        let a = Crypto.randomToken(), b = Crypto.randomToken()
        #expect(a != b)
        #expect(Base64URL.decode(Substring(a))?.count == 32)
    }

    @Test func uuidV4IsALowercaseVersion4UUIDAndDistinct() {
        let ids = (0..<1000).map { _ in Crypto.uuidV4() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(50) {
            // Foundation parses it back to the same text: 8-4-4-4-12 hex digits.
            #expect(UUID(uuidString: id)?.uuidString.lowercased() == id)
            let chars = Array(id)
            #expect(chars[14] == "4")
            #expect("89ab".contains(chars[19]))
            #expect(id == id.lowercased())
        }
    }

    @Test func argon2idHashVerifyAndRehash() throws {
        let cheap = PasswordHasher(timeCost: 1, memoryKiB: 1024, parallelism: 1)
        let encoded = try cheap.hash("correct horse")
        #expect(encoded.hasPrefix("$argon2id$v=19$m=1024,t=1,p=1$"))
        #expect(cheap.verify("correct horse", encoded: encoded))
        #expect(!cheap.verify("wrong horse", encoded: encoded))
        #expect(!cheap.verify("x", encoded: "garbage"))
        #expect(!cheap.needsRehash(encoded))
        #expect(PasswordHasher.owaspMinimum.needsRehash(encoded))
    }
}

@Suite struct JWTTests {
    let signer = JWTSigner(secret: Array(repeating: 7, count: 32))
    let claims = JWTSigner.Claims(sub: "u1", sid: "s1", iat: 1000, exp: 2000)

    @Test func roundTrip() throws {
        let token = signer.sign(claims)
        #expect(try signer.verify(token, now: 1500) == claims)
    }

    @Test func expiredIsRefused() {
        #expect(throws: JWTSigner.Failure.expired) { try signer.verify(signer.sign(claims), now: 2000) }
    }

    @Test func otherKeyIsRefused() {
        let other = JWTSigner(secret: Array(repeating: 8, count: 32))
        #expect(throws: JWTSigner.Failure.signature) { try signer.verify(other.sign(claims), now: 1500) }
    }

    @Test func verifiedTokenCacheChecksExpiryAndNeverTrustsAnotherString() {
        let cache = VerifiedTokenCache(capacity: 2)
        let token = signer.sign(claims)
        #expect(throws: Never.self) { try cache.verify(token, with: signer, now: 1500) }
        #expect((try? cache.verify(token, with: signer, now: 1500)) == claims)
        // Expired on a later hit.
        #expect(throws: JWTSigner.Failure.expired) { try cache.verify(token, with: signer, now: 2500) }
        // A tampered copy of a cached token is verified on its own, and refused.
        let parts = token.split(separator: ".")
        let forged = Base64URL.encode(Array(#"{"sub":"admin","sid":"s1","iat":1000,"exp":2000}"#.utf8))
        #expect(throws: JWTSigner.Failure.signature) { try cache.verify("\(parts[0]).\(forged).\(parts[2])", with: signer, now: 1500) }
        // A full cache starts over instead of growing.
        for i in 0..<5 {
            let t = signer.sign(JWTSigner.Claims(sub: "u\(i)", sid: "s\(i)", iat: 1000, exp: 2000))
            #expect((try? cache.verify(t, with: signer, now: 1500))?.sub == "u\(i)")
        }
    }

    @Test func tamperedPayloadIsRefused() {
        let parts = signer.sign(claims).split(separator: ".")
        let forged = Base64URL.encode(Array(#"{"sub":"admin","sid":"s1","iat":1000,"exp":2000}"#.utf8))
        #expect(throws: JWTSigner.Failure.signature) { try signer.verify("\(parts[0]).\(forged).\(parts[2])", now: 1500) }
    }

    @Test func algNoneAndOtherAlgorithmsAreRefused() {
        let payload = signer.sign(claims).split(separator: ".")[1]
        for header in [#"{"alg":"none","typ":"JWT"}"#, #"{"alg":"HS512","typ":"JWT"}"#, #"{"alg":"RS256"}"#, #"{"typ":"JWT"}"#] {
            let h = Base64URL.encode(Array(header.utf8))
            #expect(throws: JWTSigner.Failure.algorithm) { try signer.verify("\(h).\(payload).", now: 1500) }
        }
    }

    @Test func garbageIsMalformed() {
        for token in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            #expect(throws: JWTSigner.Failure.self) { try signer.verify(token, now: 1500) }
        }
    }
}

@Suite struct FastCGIParsingTests {
    func parse(_ params: [String: String], body: [UInt8] = []) -> Result<HTTPRequest, APIError> {
        FastCGIRequestParser.parse(params: params) { n in Array(body.prefix(n)) }
    }

    @Test func parsesARequest() throws {
        let r = try parse(["REQUEST_METHOD": "POST", "REQUEST_URI": "/api/rooms?limit=5&q=a%20b", "CONTENT_LENGTH": "2",
                           "CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": "Bearer t", "REMOTE_ADDR": "10.0.0.1"],
                          body: Array("{}".utf8)).get()
        #expect(r.method == "POST" && r.path == "/api/rooms" && r.body == Array("{}".utf8))
        #expect(r.queryItems == ["limit": "5", "q": "a b"])
        #expect(r.headers["authorization"] == "Bearer t" && r.headers["content-type"] == "application/json")
        #expect(r.remoteAddress == "10.0.0.1")
    }

    @Test func malformedParamsAreBadRequests() {
        #expect(throws: APIError.self) { try parse([:]).get() }
        #expect(throws: APIError.self) { try parse(["REQUEST_METHOD": "get", "REQUEST_URI": "/"]).get() }
        #expect(throws: APIError.self) { try parse(["REQUEST_METHOD": "GET", "REQUEST_URI": "nope"]).get() }
        #expect(throws: APIError.self) { try parse(["REQUEST_METHOD": "POST", "REQUEST_URI": "/", "CONTENT_LENGTH": "-1"]).get() }
        #expect(throws: APIError.self) { try parse(["REQUEST_METHOD": "POST", "REQUEST_URI": "/", "CONTENT_LENGTH": "x"]).get() }
        // Shorter than announced.
        #expect(throws: APIError.self) { try parse(["REQUEST_METHOD": "POST", "REQUEST_URI": "/", "CONTENT_LENGTH": "10"], body: [1]).get() }
    }

    @Test func oversizedBodyIs413WithoutReadingIt() {
        var read = false
        let r = FastCGIRequestParser.parse(params: ["REQUEST_METHOD": "POST", "REQUEST_URI": "/", "CONTENT_LENGTH": "65537"]) { _ in
            read = true
            return []
        }
        #expect(throws: APIError.payloadTooLarge) { try r.get() }
        #expect(!read)
    }

    @Test func replySerialization() {
        let text = String(decoding: HTTPReply.error(.methodNotAllowed(["GET"])).serialized(), as: UTF8.self)
        #expect(text.hasPrefix("Status: 405 Method Not Allowed\r\n"))
        #expect(text.contains("Allow: GET\r\n"))
        #expect(text.contains("Content-Type: application/json\r\n"))
        #expect(text.hasSuffix("\r\n\r\n" + String(decoding: APIError.methodNotAllowed(["GET"]).body, as: UTF8.self)))
    }
}

@Suite struct RelayLogicTests {
    @Test func registryBindsOnFirstAndUnbindsOnLast() {
        var r = SubscriptionRegistry<Int>()
        #expect(r.add(1, keys: ["room.a", "user.1"]).sorted() == ["room.a", "user.1"])
        #expect(r.add(2, keys: ["room.a", "user.2"]) == ["user.2"])
        #expect(r.clients(for: "room.a") == [1, 2])
        #expect(r.removeAll(1).sorted() == ["user.1"])
        #expect(r.remove(2, keys: ["room.a"]) == ["room.a"])
        #expect(r.remove(2, keys: ["room.a"]) == [])
        #expect(r.clientCount == 1)
        #expect(r.removeAll(2) == ["user.2"])
        #expect(r.allKeys.isEmpty && r.clientCount == 0)
    }

    @Test func clientFrames() {
        #expect(ClientFrame.parse(#"{"type":"auth","token":"t"}"#) == .auth(token: "t"))
        #expect(ClientFrame.parse(#"{"type":"ping"}"#) == .ping)
        #expect(ClientFrame.parse(#"{"type":"typing","room_id":"9B2C3E4F-1111-2222-3333-444455556666"}"#)
                == .typing(roomID: "9b2c3e4f-1111-2222-3333-444455556666"))
        guard case .invalid("malformed_frame", _) = ClientFrame.parse("not json") else { Issue.record("not json"); return }
        guard case .invalid("malformed_frame", _) = ClientFrame.parse("[1]") else { Issue.record("array"); return }
        guard case .invalid("unknown_type", _) = ClientFrame.parse(#"{"type":"dance"}"#) else { Issue.record("unknown"); return }
        guard case .invalid("malformed_frame", _) = ClientFrame.parse(#"{"type":"typing","room_id":"x"}"#) else { Issue.record("typing"); return }
    }
}

@Suite struct MailTests {
    @Test func headersCannotBeInjectedAndUTF8IsEncoded() {
        let m = MailMessage(from: "swiftchat <noreply@x.org>", to: "a@b.org\r\nBcc: evil@x.org", subject: "Привет",
                            text: "hello", html: "<p>hello</p>", messageID: "t1@x.org")
        let text = String(decoding: m.rfc5322(), as: UTF8.self)
        #expect(!text.contains("\r\nBcc:"))
        #expect(text.contains("Subject: =?UTF-8?B?"))
        #expect(text.contains("Message-ID: <t1@x.org>"))
        #expect(text.contains("multipart/alternative"))
        #expect(MailMessage.address("swiftchat <noreply@x.org>") == "noreply@x.org")
        #expect(MailMessage.address(" a@b.org ") == "a@b.org")
    }

    @Test func taskQueueNames() {
        let q = Topology.emailQueue(retryDelaysMs: [10, 20])
        #expect(q.maxAttempts == 3)
        #expect(q.retryQueue(1) == "tasks.email.retry.1")
        #expect(q.deadLetterQueue == "tasks.email.dead")
    }

    @Test func migrationFileNames() {
        #expect(Migrator.parseFileName("0001_init.sql")! == (1, "init"))
        #expect(Migrator.parseFileName("0012_add_index.sql")! == (12, "add_index"))
        #expect(Migrator.parseFileName("init.sql") == nil)
        #expect(Migrator.parseFileName("0001_init.txt") == nil)
    }

    @Test func migrationsInTheRepositoryLoadInOrder() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("migrations").path
        let ms = try Migrator(directory: dir).load()
        #expect(!ms.isEmpty)
        #expect(ms.map(\.version) == Array(1...ms.count))
    }
}
