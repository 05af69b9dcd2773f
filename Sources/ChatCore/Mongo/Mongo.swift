import Foundation
import CMongoc

/// A MongoDB error for one operation (the server answered). Duplicate keys are told apart
/// because idempotent sends rely on them.
public struct MongoError: Error, CustomStringConvertible, Sendable {
    public let domain: UInt32
    public let code: UInt32
    public let message: String
    public var description: String { "MongoDB \(domain)/\(code): \(message)" }
    public var isDuplicateKey: Bool { code == 11000 || code == 11001 }

    /// Server error codes that say MongoDB cannot serve the request now, not that the
    /// request was wrong: it is shutting down or restarting (91, 11600, 11602), it is not
    /// the primary (10107, 13435, 13436, 189), a network or time limit on its side (6, 7,
    /// 89, 9001, 262), or its storage engine failed (1 InternalError: what SecantusDB
    /// answers to every command after a WiredTiger panic). The API answers these as it
    /// answers an unreachable server: 503 mongodb_unavailable, and the send rolls its seq
    /// back. mongod's retryable-error list plus InternalError.
    public static let serverUnavailableCodes: Set<UInt32> = [1, 6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436]
}

private let mongocInit: Void = { mongoc_init() }()

/// Documents cross this wrapper as JSON text (MongoDB relaxed extended JSON), so the
/// bson_t never leaves it.
public typealias JSONDocument = String

/// A pool of MongoDB clients shared by all threads of a process (mongoc_client_pool_t is
/// thread-safe; each client popped from it is used by one thread at a time).
///
/// `@unchecked Sendable`: the pool pointer is only used through libmongoc's thread-safe
/// pop/push, and it is destroyed in deinit after every user is gone.
public final class MongoPool: @unchecked Sendable {
    private let pool: OpaquePointer
    private let uri: OpaquePointer
    public let database: String

    public init(url: String, database: String, maxPoolSize: Int = 16) throws {
        _ = mongocInit
        var error = bson_error_t()
        guard let uri = mongoc_uri_new_with_error(url, &error) else {
            throw MongoError(domain: error.domain, code: error.code, message: String(cString: swiftchat_bson_error_message(&error)))
        }
        // Defaults where the URL sets none. Every network call has a timeout; and the pool's
        // monitor checks the server every 2 s, not libmongoc's 10 s: after a "shutting down"
        // or "not primary" answer the server stays unknown, every request 503, until then.
        let defaults: [(String, Int32)] = [(MONGOC_URI_CONNECTTIMEOUTMS, 3000), (MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 3000),
                                           (MONGOC_URI_SOCKETTIMEOUTMS, 10000), (MONGOC_URI_HEARTBEATFREQUENCYMS, 2000)]
        for (option, value) in defaults where mongoc_uri_get_option_as_int32(uri, option, 0) == 0 {
            mongoc_uri_set_option_as_int32(uri, option, value)
        }
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_MAXPOOLSIZE, Int32(maxPoolSize))
        guard let pool = mongoc_client_pool_new(uri) else {
            mongoc_uri_destroy(uri)
            throw MongoError(domain: 0, code: 0, message: "cannot create client pool")
        }
        mongoc_client_pool_set_error_api(pool, 2)
        _ = mongoc_client_pool_set_appname(pool, "swiftchat")
        self.pool = pool
        self.uri = uri
        self.database = database
    }

    deinit {
        mongoc_client_pool_destroy(pool)
        mongoc_uri_destroy(uri)
    }

    /// Borrows a client for the duration of `body`.
    public func withClient<T>(_ body: (MongoClient) throws -> T) throws -> T {
        let client = mongoc_client_pool_pop(pool)!
        defer { mongoc_client_pool_push(pool, client) }
        return try body(MongoClient(client: client, database: database))
    }

    public func collection<T>(_ name: String, _ body: (MongoCollection) throws -> T) throws -> T {
        try withClient { try body($0.collection(name)) }
    }

    /// Opens up to `clients` pooled clients' connections now (a ping each), so the first
    /// requests after a start do not each pay a connect and handshake. Takes only clients
    /// the pool can give without waiting, stops at the first ping that fails (the server
    /// is down: the requests will find out), and returns every client it took. Returns
    /// how many answered.
    @discardableResult
    public func warmUp(clients: Int) -> Int {
        var taken: [OpaquePointer] = []
        defer { taken.forEach { mongoc_client_pool_push(pool, $0) } }
        for _ in 0..<max(0, clients) {
            guard let client = mongoc_client_pool_try_pop(pool) else { break }
            taken.append(client)
            guard (try? MongoClient(client: client, database: database).ping()) != nil else { return taken.count - 1 }
        }
        return taken.count
    }

    /// Pings every pooled client that is not in use, so that no pooled connection sits idle
    /// long enough for the server (SecantusDB closes a connection after 300 s without a
    /// command) or a firewall between to drop it. libmongoc checks a pooled connection only
    /// when it is used: a dropped one failed the next request that drew it (503
    /// mongodb_unavailable), and the network error made every thread of the process wait
    /// for a new server check (about a second). Clients are held one ping at a time; after
    /// the first failed ping the rest go back unpinged (the server is down or restarting:
    /// the requests will find out). Returns how many answered.
    @discardableResult
    public func pingIdleClients() -> Int {
        var idle: [OpaquePointer] = []
        while let client = mongoc_client_pool_try_pop(pool) { idle.append(client) }
        var answered = 0
        for (i, client) in idle.enumerated() {
            guard (try? MongoClient(client: client, database: database).ping()) != nil else {
                idle[i...].forEach { mongoc_client_pool_push(pool, $0) }
                return answered
            }
            mongoc_client_pool_push(pool, client)
            answered += 1
        }
        return answered
    }
}

/// A client borrowed from the pool; valid only inside `withClient`.
public struct MongoClient {
    fileprivate let client: OpaquePointer
    let database: String

    public func collection(_ name: String) -> MongoCollection { MongoCollection(client: client, database: database, name: name) }

    /// Runs a database command given as JSON and returns the reply as JSON.
    @discardableResult
    public func command(_ json: JSONDocument) throws -> JSONDocument {
        let cmd = try BSON(json: json)
        let reply = bson_new()!
        defer { bson_destroy(reply) }
        var error = bson_error_t()
        let ok = mongoc_client_command_simple(client, database, cmd.pointer, nil, reply, &error)
        guard ok else { throw mongoFailure(&error) }
        return BSON.json(reply)
    }

    public func ping() throws { try command(#"{"ping": 1}"#) }
}

/// One collection's operations. Filters, options and documents are JSON.
public struct MongoCollection {
    fileprivate let client: OpaquePointer
    let database: String
    let name: String

    private func with<T>(_ body: (OpaquePointer) throws -> T) rethrows -> T {
        let coll = mongoc_client_get_collection(client, database, name)!
        defer { mongoc_collection_destroy(coll) }
        return try body(coll)
    }

    public func insertOne(_ document: JSONDocument) throws {
        let doc = try BSON(json: document)
        var error = bson_error_t()
        let ok = with { mongoc_collection_insert_one($0, doc.pointer, nil, nil, &error) }
        guard ok else { throw mongoFailure(&error) }
    }

    /// find with a filter and options such as {"sort": {...}, "limit": n, "projection": {...}}.
    public func find(_ filter: JSONDocument, options: JSONDocument = "{}") throws -> [JSONDocument] {
        let f = try BSON(json: filter)
        let o = try BSON(json: options)
        return try with { coll in
            let cursor = mongoc_collection_find_with_opts(coll, f.pointer, o.pointer, nil)!
            defer { mongoc_cursor_destroy(cursor) }
            var out = [JSONDocument]()
            var doc: OpaquePointer? = nil
            while mongoc_cursor_next(cursor, &doc) {
                out.append(BSON.json(doc!))
            }
            var error = bson_error_t()
            if mongoc_cursor_error(cursor, &error) { throw mongoFailure(&error) }
            return out
        }
    }

    /// update_one; returns (matched, modified).
    @discardableResult
    public func updateOne(_ filter: JSONDocument, _ update: JSONDocument, upsert: Bool = false) throws -> (matched: Int, modified: Int) {
        let f = try BSON(json: filter)
        let u = try BSON(json: update)
        let o = try BSON(json: upsert ? #"{"upsert": true}"# : "{}")
        let reply = bson_new()!
        defer { bson_destroy(reply) }
        var error = bson_error_t()
        let ok = with { mongoc_collection_update_one($0, f.pointer, u.pointer, o.pointer, reply, &error) }
        guard ok else { throw mongoFailure(&error) }
        let r = BSON.json(reply)
        let obj = (try? JSONSerialization.jsonObject(with: Data(r.utf8))) as? [String: Any] ?? [:]
        return ((obj["matchedCount"] as? NSNumber)?.intValue ?? 0, (obj["modifiedCount"] as? NSNumber)?.intValue ?? 0)
    }

    /// createIndexes: `indexes` is a JSON array of index specs ({"key": {...}, "name": ..., "unique": true, ...}).
    public func createIndexes(_ indexes: JSONDocument) throws {
        let cmd = "{\"createIndexes\": \(JSON.quote(name)), \"indexes\": \(indexes)}"
        try MongoClient(client: client, database: database).command(cmd)
    }
}

/// Maps libmongoc errors: no server reachable is the dependency being down (503), and so
/// is a server that answers it cannot serve now (`MongoError.serverUnavailableCodes`);
/// anything else the server answered is a MongoError.
private func mongoFailure(_ error: inout bson_error_t) -> Error {
    let message = String(cString: swiftchat_bson_error_message(&error))
    let answered = error.domain == MONGOC_ERROR_SERVER.rawValue || error.domain == MONGOC_ERROR_WRITE_CONCERN.rawValue
    if answered, MongoError.serverUnavailableCodes.contains(error.code) {
        return DependencyError(.mongodb, "server error \(error.code): \(message)")
    }
    switch Int(error.domain) {
    case Int(MONGOC_ERROR_STREAM.rawValue), Int(MONGOC_ERROR_SERVER_SELECTION.rawValue), Int(MONGOC_ERROR_CLIENT.rawValue):
        return DependencyError(.mongodb, message)
    default:
        return MongoError(domain: error.domain, code: error.code, message: message)
    }
}

/// Owns one heap bson_t built from JSON.
private final class BSON {
    let pointer: OpaquePointer

    init(json: JSONDocument) throws {
        var error = bson_error_t()
        let bytes = Array(json.utf8)
        guard let doc = bytes.withUnsafeBufferPointer({ bson_new_from_json($0.baseAddress, bytes.count, &error) }) else {
            throw MongoError(domain: error.domain, code: error.code, message: "invalid document: " + String(cString: swiftchat_bson_error_message(&error)))
        }
        pointer = doc
    }

    deinit { bson_destroy(pointer) }

    static func json(_ doc: OpaquePointer) -> JSONDocument {
        var len = 0
        guard let s = bson_as_relaxed_extended_json(doc, &len) else { return "{}" }
        defer { bson_free(s) }
        return String(cString: s)
    }

    /// Shallow merge of two JSON objects (b's keys win).
    static func merge(_ a: JSONDocument, _ b: JSONDocument) throws -> JSONDocument {
        var x = (try JSONSerialization.jsonObject(with: Data(a.utf8))) as? [String: Any] ?? [:]
        let y = (try JSONSerialization.jsonObject(with: Data(b.utf8))) as? [String: Any] ?? [:]
        for (k, v) in y { x[k] = v }
        return String(decoding: try JSONSerialization.data(withJSONObject: x), as: UTF8.self)
    }
}
