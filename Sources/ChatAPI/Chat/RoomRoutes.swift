import Foundation
import Logging
import ChatCore

/// A room as the caller may see it: private and direct rooms they are not in do not exist.
struct RoomAccess {
    /// The room's id and kind: what every access decision needs (GET /api/rooms/{id}
    /// loads the whole room, with its member count, only after the check).
    struct Ref { let id: String; let kind: String }
    let room: Ref
    let role: String?

    var isMember: Bool { role != nil }
    var isModerator: Bool { role == "owner" || role == "admin" }

    func requireMember() throws(APIError) {
        guard isMember else { throw APIError.forbidden("not_a_member", "Join this room first.") }
    }
}

/// Shared by room and message routes.
struct ChatSupport: Sendable {
    let logger = Logger(label: "chat")
    static let roomNotFound = APIError.notFound("not_found", "There is no such room.")
    /// The room's kind and the caller's role (NULL for a non-member): $1 room, $2 user.
    static let accessSQL = """
        SELECT r.kind, m.role FROM rooms r LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $2
        WHERE r.id = $1
        """

    func access(_ ctx: RequestContext, _ raw: String? = nil) throws -> RoomAccess {
        let rid = try Validate.uuid(raw ?? ctx.param("id"), notFound: ChatSupport.roomNotFound)
        // One round trip: the room's kind and the caller's role (NULL for a non-member).
        guard let row = try ctx.services.postgres.query(ChatSupport.accessSQL, [rid, try ctx.user.userID]).first
        else { throw ChatSupport.roomNotFound }
        let kind = try row.string("kind"), role = try row.optionalString("role")
        if kind != "public" && role == nil { throw ChatSupport.roomNotFound }
        return RoomAccess(room: .init(id: rid, kind: kind), role: role)
    }

    /// Makes a new member's live sockets receive the room's very next event: every relay
    /// queue that serves one of the user's sockets (registered by the relays in Redis) is
    /// bound to the room's key before the join answers, and `member.joined` follows on
    /// that key, which the relays use to subscribe the sockets.
    func memberJoined(_ ctx: RequestContext, roomID: String, userID: String) {
        do {
            let queues = try ctx.services.redis.command("SMEMBERS", "relay_queues:" + userID).array ?? []
            for q in queues.compactMap(\.string) {
                do {
                    try ctx.services.amqp.bind(queue: q, exchange: Topology.eventsExchange, routingKey: "room." + roomID)
                } catch let e as AMQPError {
                    // The relay is gone (its queue expired): forget it.
                    logger.info("relay queue gone", metadata: ["queue": "\(q)", "error": "\(e)"])
                    try? ctx.services.redis.command("SREM", "relay_queues:" + userID, q)
                }
            }
        } catch {
            logger.warning("could not bind relay queues for a new member", metadata: ["error": "\(error)"])
        }
        publish(ctx, key: "room." + roomID, type: "member.joined", user: userID,
                body: JSON.encode(Events.MemberEvent(type: "member.joined", room_id: roomID, user_id: userID)))
    }

    func memberLeft(_ ctx: RequestContext, roomID: String, userID: String) {
        publish(ctx, key: "room." + roomID, type: "member.left", user: userID,
                body: JSON.encode(Events.MemberEvent(type: "member.left", room_id: roomID, user_id: userID)))
    }

    /// Publishes an event after the state it describes is stored. A failure is logged and
    /// counted, never hidden and never turned into an error for what is already stored:
    /// clients recover by seq.
    func publish(_ ctx: RequestContext, key: String, type: String, user: String, body: [UInt8]) {
        do {
            try Events.publish(ctx, key: key, type: type, user: user, body: body)
        } catch {
            ChatSupport.publishFailures.add(1)
            logger.error("event not published", metadata: ["event": "\(type)", "key": "\(key)", "error": "\(error)",
                                                           "failures": "\(ChatSupport.publishFailures.value)"])
        }
    }

    static let publishFailures = AtomicCounter()
}

/// A counter readable from any thread.
public final class AtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n: Int64 = 0
    public init() {}
    public func add(_ k: Int64) { lock.lock(); n += k; lock.unlock() }
    public var value: Int64 { lock.lock(); defer { lock.unlock() }; return n }
}

/// Rooms, members, direct rooms and user search (API.md "Rooms").
public struct RoomRoutes: Sendable {
    let chat = ChatSupport()

    public init() {}

    public func register(_ router: inout Router) {
        router.add("POST", "/api/rooms", auth: .user) { try self.create($0) }
        router.add("GET", "/api/rooms", auth: .user) { try self.mine($0) }
        router.add("GET", "/api/rooms/public", auth: .user) { try self.directory($0) }
        router.add("GET", "/api/rooms/{id}", auth: .user) { ctx in
            let access = try self.chat.access(ctx)
            guard let room = try RoomStore(db: ctx.services.postgres).room(access.room.id) else { throw ChatSupport.roomNotFound }
            return .json(room)
        }
        router.add("POST", "/api/rooms/{id}/join", auth: .user) { try self.join($0) }
        router.add("POST", "/api/rooms/{id}/leave", auth: .user) { try self.leave($0) }
        router.add("GET", "/api/rooms/{id}/members", auth: .user) { try self.members($0) }
        router.add("POST", "/api/rooms/{id}/members", auth: .user) { try self.addMember($0) }
        router.add("DELETE", "/api/rooms/{id}/members/{user_id}", auth: .user) { try self.removeMember($0) }
        router.add("POST", "/api/direct", auth: .user) { try self.direct($0) }
        router.add("GET", "/api/users", auth: .user) { try self.searchUsers($0) }
    }

    static func roomName(_ raw: String) throws(APIError) -> String {
        let name = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard Validate.fitsRaw(raw, characters: 100), !name.isEmpty, name.count <= 100, !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw APIError.badRequest("invalid_room_name", "The room name needs 1 to 100 characters.")
        }
        return name
    }

    func create(_ ctx: RequestContext) throws -> HTTPReply {
        struct Body: Decodable { let name: String; let kind: String }
        let body = try ctx.decode(Body.self)
        let name = try RoomRoutes.roomName(body.name)
        guard body.kind == "public" || body.kind == "private" else {
            throw APIError.badRequest("invalid_kind", "A room is \"public\" or \"private\".")
        }
        let me = try ctx.user.userID
        let room = try RoomStore(db: ctx.services.postgres).create(name: name, kind: body.kind, owner: me)
        chat.memberJoined(ctx, roomID: room.id, userID: me)
        return .json(room, status: 201)
    }

    func mine(_ ctx: RequestContext) throws -> HTTPReply {
        struct Reply: Encodable { let rooms: [MyRoom] }
        return .json(Reply(rooms: try RoomStore(db: ctx.services.postgres).myRooms(try ctx.user.userID)))
    }

    func directory(_ ctx: RequestContext) throws -> HTTPReply {
        let q = ctx.request.queryItems
        let query = (q["q"] ?? "").trimmingCharacters(in: .whitespaces)
        guard Validate.fitsRaw(q["q"] ?? "", characters: 100), query.count <= 100 else { throw APIError.badRequest("invalid_query", "The search text is too long.") }
        var limit = 50
        if let raw = q["limit"] {
            guard let n = Int(raw), (1...100).contains(n) else { throw APIError.badRequest("invalid_limit", "limit must be 1 to 100.") }
            limit = n
        }
        struct Reply: Encodable { let rooms: [Room] }
        return .json(Reply(rooms: try RoomStore(db: ctx.services.postgres).publicRooms(query: query, limit: limit)))
    }

    func join(_ ctx: RequestContext) throws -> HTTPReply {
        let rid = try Validate.uuid(ctx.param("id"), notFound: ChatSupport.roomNotFound)
        let store = RoomStore(db: ctx.services.postgres)
        let me = try ctx.user.userID
        guard let room = try store.room(rid) else { throw ChatSupport.roomNotFound }
        if try store.role(rid, me) != nil { return .json(room) }
        guard room.kind == "public" else { throw APIError.forbidden("not_invited", "This room is private: a member must add you.") }
        if try store.addMember(rid, me) { chat.memberJoined(ctx, roomID: rid, userID: me) }
        return .json(try store.room(rid)!)
    }

    func leave(_ ctx: RequestContext) throws -> HTTPReply {
        let access = try chat.access(ctx)
        try access.requireMember()
        let me = try ctx.user.userID
        if try RoomStore(db: ctx.services.postgres).removeMember(access.room.id, me) {
            chat.memberLeft(ctx, roomID: access.room.id, userID: me)
        }
        return .noContent()
    }

    func members(_ ctx: RequestContext) throws -> HTTPReply {
        let access = try chat.access(ctx)
        try access.requireMember()
        struct Reply: Encodable { let members: [Member] }
        var members = try RoomStore(db: ctx.services.postgres).members(access.room.id)
        // The presence snapshot a client needs before `presence` events start: a member is
        // online while any relay's claim on them is live (see WSRelay/Presence.swift).
        let now = String(Date().timeIntervalSince1970)
        let counts = try ctx.services.redis.pipeline(members.map { ["ZCOUNT", "presence:" + $0.user_id, now, "+inf"] })
        for i in members.indices { members[i].online = (counts[i].int ?? 0) > 0 }
        return .json(Reply(members: members))
    }

    func addMember(_ ctx: RequestContext) throws -> HTTPReply {
        struct Body: Decodable { let user_id: String }
        let body = try ctx.decode(Body.self)
        let access = try chat.access(ctx)
        try access.requireMember()
        guard access.isModerator, access.room.kind != "direct" else {
            throw APIError.forbidden("forbidden", "Only the room's owner or an admin can add members.")
        }
        let uid = try Validate.uuid(body.user_id, notFound: APIError.notFound("user_not_found", "There is no such user."))
        guard try UserStore(db: ctx.services.postgres).byID(uid) != nil else { throw APIError.notFound("user_not_found", "There is no such user.") }
        let store = RoomStore(db: ctx.services.postgres)
        let added = try store.addMember(access.room.id, uid)
        if added { chat.memberJoined(ctx, roomID: access.room.id, userID: uid) }
        return .json(try store.member(access.room.id, uid)!, status: added ? 201 : 200)
    }

    func removeMember(_ ctx: RequestContext) throws -> HTTPReply {
        let access = try chat.access(ctx)
        try access.requireMember()
        let me = try ctx.user.userID
        let store = RoomStore(db: ctx.services.postgres)
        let target = try Validate.uuid(ctx.param("user_id"), notFound: APIError.notFound("not_a_member", "This user is not a member."))
        guard let targetRole = try store.role(access.room.id, target) else {
            throw APIError.notFound("not_a_member", "This user is not a member.")
        }
        if target != me {
            guard access.isModerator, access.room.kind != "direct" else {
                throw APIError.forbidden("forbidden", "Only the room's owner or an admin can remove members.")
            }
            guard targetRole != "owner", !(access.role == "admin" && targetRole == "admin") else {
                throw APIError.forbidden("forbidden", "You cannot remove this member.")
            }
        }
        if try store.removeMember(access.room.id, target) { chat.memberLeft(ctx, roomID: access.room.id, userID: target) }
        return .noContent()
    }

    func direct(_ ctx: RequestContext) throws -> HTTPReply {
        struct Body: Decodable { let user_id: String }
        let body = try ctx.decode(Body.self)
        let me = try ctx.user.userID
        let notFound = APIError.notFound("user_not_found", "There is no such user.")
        let other = try Validate.uuid(body.user_id, notFound: notFound)
        guard other != me else { throw APIError.badRequest("invalid_user", "A direct room needs another user.") }
        let users = UserStore(db: ctx.services.postgres)
        guard let them = try users.byID(other)?.user, let mine = try users.byID(me)?.user else { throw notFound }
        let key = [me, other].sorted().joined(separator: ":")
        let db = ctx.services.postgres
        let store = RoomStore(db: db)
        let existing = { try db.query("SELECT id::text AS id FROM rooms WHERE direct_key = $1", [key]).first.map { try $0.string("id") } }
        if let id = try existing() { return .json(try store.room(id)!) }
        let name = String("\(mine.display_name) & \(them.display_name)".prefix(100))
        let created: String? = try db.transaction { db in
            guard let id = try db.query("""
                INSERT INTO rooms (name, kind, created_by, direct_key) VALUES ($1, 'direct', $2, $3)
                ON CONFLICT (direct_key) DO NOTHING RETURNING id::text AS id
                """, [name, me, key]).first.map({ try $0.string("id") }) else { return nil }
            try db.query("INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, 'member'), ($1, $3, 'member')", [id, me, other])
            return id
        }
        guard let id = created else { return .json(try store.room(try existing()!)!) } // a concurrent request made it
        chat.memberJoined(ctx, roomID: id, userID: me)
        chat.memberJoined(ctx, roomID: id, userID: other)
        return .json(try store.room(id)!, status: 201)
    }

    func searchUsers(_ ctx: RequestContext) throws -> HTTPReply {
        let q = (ctx.request.queryItems["q"] ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        guard Validate.fitsRaw(ctx.request.queryItems["q"] ?? "", characters: 100), q.count >= 2, q.count <= 100 else { throw APIError.badRequest("invalid_query", "Type at least 2 characters.") }
        let pattern = q.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_") + "%"
        struct Item: Encodable { let id: String; let display_name: String }
        struct Reply: Encodable { let users: [Item] }
        let rows = try ctx.services.postgres.query("""
            SELECT id::text AS id, display_name FROM users
            WHERE email_verified AND (lower(display_name) LIKE $1 OR email_lower LIKE $1)
            ORDER BY lower(display_name) LIMIT 20
            """, [pattern])
        return .json(Reply(users: try rows.map { Item(id: try $0.string("id"), display_name: try $0.string("display_name")) }))
    }
}
