import Foundation
import Logging
import ChatCore

/// How search runs in this process (decided when the indexes are ensured at start-up).
public enum SearchModeSetting {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var mode = MessageIndexes.SearchMode.regex
    public static var current: MessageIndexes.SearchMode {
        get { lock.lock(); defer { lock.unlock() }; return mode }
        set { lock.lock(); mode = newValue; lock.unlock() }
    }
}

/// Messages (API.md "Messages"): the send path of ARCHITECTURE.md, history, edits,
/// tombstones, read markers and search.
public struct MessageRoutes: Sendable {
    let chat = ChatSupport()
    let logger = Logger(label: "messages")
    let sendLimit: RateLimiter.Rule
    /// A send slower than this is logged with the time of each step (0: never).
    let slowSendMs: Double

    public init(sendLimit: RateLimiter.Rule, slowSendMs: Double = 1000) {
        self.sendLimit = sendLimit
        self.slowSendMs = slowSendMs
    }

    public func register(_ router: inout Router) {
        router.add("POST", "/api/rooms/{id}/messages", auth: .user) { try self.send($0) }
        router.add("GET", "/api/rooms/{id}/messages", auth: .user) { try self.history($0) }
        router.add("PATCH", "/api/rooms/{id}/messages/{message_id}", auth: .user) { try self.edit($0) }
        router.add("DELETE", "/api/rooms/{id}/messages/{message_id}", auth: .user) { try self.delete($0) }
        router.add("POST", "/api/rooms/{id}/read", auth: .user) { try self.read($0) }
        router.add("GET", "/api/search", auth: .user) { try self.search($0) }
    }

    static func body(_ raw: String) throws(APIError) -> String {
        let body = raw.trimmingWhitespace
        // The raw value (whitespace around it included) is bounded too: 8000 scalars.
        guard raw.unicodeScalars.count <= 8000, !body.isEmpty, body.unicodeScalars.count <= 4000 else {
            throw APIError.badRequest("invalid_body", "A message needs 1 to 4000 characters.")
        }
        return body
    }

    func find(_ ctx: RequestContext, _ filter: [String: Any], options: String = "{}") throws -> [Message] {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: filter), as: UTF8.self)
        return try ctx.services.mongo.collection(MessageIndexes.collection) { try $0.find(json, options: options) }.map(Message.from)
    }

    func existing(_ ctx: RequestContext, room: String, author: String, clientID: String) throws -> Message? {
        try find(ctx, ["room_id": room, "author_id": author, "client_id": clientID]).first
    }

    // MARK: send

    func send(_ ctx: RequestContext) throws -> HTTPReply {
        struct Body: Decodable { let body: String; let client_id: String? }
        let phases = Phases()
        defer { phases.logIfSlow(over: slowSendMs, logger: logger, what: "slow send") }
        let input = try ctx.decode(Body.self)
        let access = try chat.access(ctx)
        phases.mark("access")
        try access.requireMember()
        let me = try ctx.user.userID
        let room = access.room.id
        let text = try MessageRoutes.body(input.body)
        if let cid = input.client_id {
            guard !cid.isEmpty, cid.count <= 128, Validate.fitsRaw(cid, characters: 128) else { throw APIError.badRequest("invalid_client_id", "client_id needs 1 to 128 characters.") }
        }
        try RateLimiter(redis: ctx.services.redis).reserve(sendLimit, me)
        phases.mark("rate_limit")
        // No lookup before the insert: the unique {room_id, author_id, client_id} index
        // detects a retry, the transaction rolls the seq back, and the original is returned.
        switch try store(ctx, room: room, author: me, body: text, clientID: input.client_id, retryOnOrphan: true, phases: phases) {
        case .stored(let json): return .rawJSON(json, status: 201)
        case .duplicate(let m): return .rawJSON(m.json)
        }
    }

    /// One statement: the room's next seq (the row lock serializes the room's sends) and
    /// the author's read marker moved to it (sending reads up to your own message).
    /// $1 room, $2 author.
    static let nextSeqSQL = """
        WITH r AS (UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq),
             m AS (UPDATE room_members SET last_read_seq = GREATEST(last_read_seq, (SELECT last_seq FROM r))
                   WHERE room_id = $1 AND user_id = $2)
        SELECT last_seq FROM r
        """

    /// A new message's API JSON (already encoded for its event), or the original of a retry.
    enum Stored { case stored(json: [UInt8]), duplicate(Message) }

    /// Allocates the seq and inserts the message inside one PostgreSQL transaction: the
    /// `UPDATE rooms ... RETURNING last_seq` row lock serializes the room's sends, and a
    /// failed MongoDB insert rolls the counter back, so no seq is burned or duplicated.
    ///
    /// The transaction commits asynchronously (no WAL flush wait): MongoDB holds the
    /// message durably, and should PostgreSQL crash and lose the last commits, the counter
    /// steps back below stored seqs, which the next send finds (a duplicate seq) and adopts
    /// (see `.orphanSeq`). What such a crash can lose is a sender's read-marker move.
    func store(_ ctx: RequestContext, room: String, author: String, body: String, clientID: String?, retryOnOrphan: Bool,
               phases: Phases = Phases()) throws -> Stored {
        let db = ctx.services.postgres
        enum Outcome { case ok([UInt8]), duplicateClient, orphanSeq(Int64) }
        // The seq statement travels with the BEGIN: one round trip.
        let outcome: Outcome = try db.transaction(synchronousCommit: false, first: MessageRoutes.nextSeqSQL, [room, author]) { db, rows in
            guard let seq = try rows.first?.int("last_seq") else { throw ChatSupport.roomNotFound }
            phases.mark("seq")
            let now = Date()
            let ms = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
            let m = Message(id: Crypto.uuidV4(), room_id: room, seq: seq, author_id: author, body: body,
                            created_at: Timestamp.format(millis: ms), edited_at: nil, deleted: false, client_id: clientID)
            do {
                try ctx.services.mongo.collection(MessageIndexes.collection) { try $0.insertOne(m.document(createdMillis: ms)) }
                phases.mark("insert")
            } catch let e as MongoError where e.isDuplicateKey {
                // Roll back: either a concurrent retry with the same client_id won, or a
                // message was stored earlier whose commit never happened (an orphan seq).
                try db.query("ROLLBACK")
                try db.query("BEGIN")
                return e.message.contains("client_id") || e.message.contains("room_author_client") ? .duplicateClient : .orphanSeq(seq)
            }
            // Published while the room's row lock is held, so the room's events leave in seq
            // order (publishing after COMMIT let two concurrent sends overtake each other).
            // The message is already durable in MongoDB; should the COMMIT fail now, the
            // next send adopts its seq (see below), so what clients saw stays true.
            let json = m.json
            chat.publish(ctx, key: "room." + room, type: "message.created", user: author, body: m.event("message.created", json: json))
            phases.mark("publish")
            return .ok(json)
        }
        phases.mark("commit")
        switch outcome {
        case .ok(let json):
            return .stored(json: json)
        case .duplicateClient:
            guard let clientID, let original = try existing(ctx, room: room, author: author, clientID: clientID) else {
                throw APIError.conflict("conflict", "The message could not be stored; try again.")
            }
            return .duplicate(original)
        case .orphanSeq(let seq):
            // A message with this seq is stored although its transaction did not commit
            // (PostgreSQL failed after the insert, or lost its last commits in a crash).
            // Stored messages are durable, so they count: move the counter past the room's
            // highest stored seq and allocate again.
            let highest = try find(ctx, ["room_id": room], options: #"{"sort": {"seq": -1}, "limit": 1}"#).first?.seq ?? seq
            logger.warning("orphan seq found; adopting the stored seqs", metadata: ["room": "\(room)", "seq": "\(seq)", "highest": "\(highest)"])
            try db.query("UPDATE rooms SET last_seq = GREATEST(last_seq, $2) WHERE id = $1", [room, max(seq, highest)])
            guard retryOnOrphan else { throw APIError.conflict("conflict", "The message could not be stored; try again.") }
            return try store(ctx, room: room, author: author, body: body, clientID: clientID, retryOnOrphan: false)
        }
    }

    // MARK: history

    func history(_ ctx: RequestContext) throws -> HTTPReply {
        let access = try chat.access(ctx)
        try access.requireMember()
        let q = ctx.request.queryItems
        func seqParam(_ name: String) throws -> Int64? {
            guard let raw = q[name] else { return nil }
            guard let v = Int64(raw), v >= 0 else { throw APIError.badRequest("invalid_\(name)", "\(name) must be a non-negative integer.") }
            return v
        }
        var limit = 50
        if let raw = q["limit"] {
            guard let n = Int(raw), (1...100).contains(n) else { throw APIError.badRequest("invalid_limit", "limit must be 1 to 100.") }
            limit = n
        }
        let before = try seqParam("before_seq"), after = try seqParam("after_seq")
        var range: [String: Any] = [:]
        if let before { range["$lt"] = before }
        if let after { range["$gt"] = after }
        var filter: [String: Any] = ["room_id": access.room.id]
        if !range.isEmpty { filter["seq"] = range }
        // after_seq reads forward (oldest first); otherwise the newest page backwards.
        let ascending = after != nil
        var page = try find(ctx, filter, options: "{\"sort\": {\"seq\": \(ascending ? 1 : -1)}, \"limit\": \(limit + 1)}")
        let hasMore = page.count > limit
        page = Array(page.prefix(limit))
        if !ascending { page.reverse() }
        struct Reply: Encodable { let messages: [Message]; let has_more: Bool }
        return .json(Reply(messages: page, has_more: hasMore))
    }

    // MARK: edit and delete

    func load(_ ctx: RequestContext, _ access: RoomAccess) throws -> Message {
        let notFound = APIError.notFound("not_found", "There is no such message.")
        let id = try Validate.uuid(ctx.param("message_id"), notFound: notFound)
        guard let m = try find(ctx, ["_id": id, "room_id": access.room.id]).first else { throw notFound }
        return m
    }

    func edit(_ ctx: RequestContext) throws -> HTTPReply {
        struct Body: Decodable { let body: String }
        let input = try ctx.decode(Body.self)
        let access = try chat.access(ctx)
        try access.requireMember()
        var m = try load(ctx, access)
        guard m.author_id == (try ctx.user.userID) else { throw APIError.forbidden("not_author", "Only the author can edit a message.") }
        guard !m.deleted else { throw APIError.notFound("not_found", "This message was deleted.") }
        m.body = try MessageRoutes.body(input.body)
        m.edited_at = Timestamp.format(Date())
        let set = try JSONSerialization.data(withJSONObject: ["$set": ["body": m.body, "edited_at": m.edited_at!]])
        try ctx.services.mongo.collection(MessageIndexes.collection) {
            try $0.updateOne("{\"_id\": \(JSON.quote(m.id))}", String(decoding: set, as: UTF8.self))
        }
        let json = m.json
        chat.publish(ctx, key: "room." + m.room_id, type: "message.updated", user: m.author_id,
                     body: m.event("message.updated", json: json))
        return .rawJSON(json)
    }

    func delete(_ ctx: RequestContext) throws -> HTTPReply {
        let access = try chat.access(ctx)
        try access.requireMember()
        let m = try load(ctx, access)
        let me = try ctx.user.userID
        guard m.author_id == me || access.isModerator else {
            throw APIError.forbidden("forbidden", "Only the author or the room's owner or admins can delete a message.")
        }
        if !m.deleted {
            // A tombstone: the seq stays in history so clients see no gap.
            try ctx.services.mongo.collection(MessageIndexes.collection) {
                try $0.updateOne("{\"_id\": \(JSON.quote(m.id))}", #"{"$set": {"deleted": true, "body": ""}}"#)
            }
            chat.publish(ctx, key: "room." + m.room_id, type: "message.deleted", user: me,
                         body: JSON.encode(Events.MessageDeleted(room_id: m.room_id, message_id: m.id, seq: m.seq)))
        }
        return .noContent()
    }

    // MARK: read markers and search

    func read(_ ctx: RequestContext) throws -> HTTPReply {
        struct Body: Decodable { let seq: Int64 }
        let input = try ctx.decode(Body.self)
        guard input.seq >= 0 else { throw APIError.badRequest("invalid_seq", "seq must be a non-negative integer.") }
        let access = try chat.access(ctx)
        try access.requireMember()
        let me = try ctx.user.userID
        guard let marker = try RoomStore(db: ctx.services.postgres).markRead(access.room.id, me, seq: input.seq) else {
            throw APIError.forbidden("not_a_member", "Join this room first.")
        }
        chat.publish(ctx, key: "user." + me, type: "room.read", user: me,
                     body: JSON.encode(Events.ReadEvent(room_id: access.room.id, seq: marker)))
        return .noContent()
    }

    func search(_ ctx: RequestContext) throws -> HTTPReply {
        let q = ctx.request.queryItems
        let text = (q["q"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        // U+0000 cannot be stored in a BSON regex (libmongoc refuses the document).
        guard Validate.fitsRaw(q["q"] ?? "", characters: 200), !text.isEmpty, text.count <= 200,
              !text.unicodeScalars.contains("\u{0}") else { throw APIError.badRequest("invalid_query", "Search for 1 to 200 characters.") }
        var rooms = try RoomStore(db: ctx.services.postgres).roomIDs(of: try ctx.user.userID)
        if let rid = q["room_id"] { rooms = rooms.filter { $0 == rid.lowercased() } }
        struct Reply: Encodable { let messages: [Message] }
        guard !rooms.isEmpty else { return .json(Reply(messages: [])) }
        var filter: [String: Any] = ["room_id": ["$in": rooms], "deleted": false]
        switch SearchModeSetting.current {
        case .textIndex:
            filter["$text"] = ["$search": text]
        case .regex:
            let escaped = NSRegularExpression.escapedPattern(for: text)
            filter["body"] = ["$regex": escaped, "$options": "i"]
        }
        let found = try find(ctx, filter, options: #"{"sort": {"created_ms": -1}, "limit": 50}"#)
        return .json(Reply(messages: found))
    }
}

/// Where a request's time went: `mark` after each step; a slow request logs every step.
/// One per request, on its thread.
final class Phases {
    private let start = Clock.monotonicNanos()
    private var last: UInt64
    private var steps: [(String, Double)] = []

    init() { last = start }

    func mark(_ step: String) {
        let now = Clock.monotonicNanos()
        steps.append((step, Double(now - last) / 1e6))
        last = now
    }

    func logIfSlow(over limitMs: Double, logger: Logger, what: String) {
        let total = Double(Clock.monotonicNanos() - start) / 1e6
        guard limitMs > 0, total > limitMs else { return }
        var metadata: Logger.Metadata = ["total_ms": "\((total * 10).rounded() / 10)"]
        for (step, ms) in steps { metadata[step + "_ms"] = "\((ms * 10).rounded() / 10)" }
        logger.warning("\(what)", metadata: metadata)
    }
}
