import Foundation
import ChatCore

/// SQL for rooms and memberships. Values always travel as bind parameters.
struct RoomStore {
    let db: PostgresConnection

    static let roomColumns = """
        r.id::text AS id, r.name, r.kind, r.created_by::text AS created_by,
        to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at, r.last_seq,
        (SELECT count(*) FROM room_members c WHERE c.room_id = r.id) AS member_count
        """

    static func room(_ row: PostgresRow) throws -> Room {
        Room(id: try row.string("id"), name: try row.string("name"), kind: try row.string("kind"),
             created_by: try row.string("created_by"), created_at: try row.string("created_at"),
             last_seq: try row.int("last_seq"), member_count: try row.int("member_count"))
    }

    func room(_ id: String) throws -> Room? {
        try db.query("SELECT \(RoomStore.roomColumns) FROM rooms r WHERE r.id = $1", [id]).first.map(RoomStore.room)
    }

    /// The caller's role in a room, or nil.
    func role(_ roomID: String, _ userID: String) throws -> String? {
        try db.query("SELECT role FROM room_members WHERE room_id = $1 AND user_id = $2", [roomID, userID]).first.map { try $0.string("role") }
    }

    func create(name: String, kind: String, owner: String) throws -> Room {
        try db.transaction { db in
            let id = try db.query("INSERT INTO rooms (name, kind, created_by) VALUES ($1, $2, $3) RETURNING id::text AS id",
                                  [name, kind, owner]).first!.string("id")
            try db.query("INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, 'owner')", [id, owner])
            return try room(id)!
        }
    }

    /// Adds a member with the read marker at the room's last seq; false when already there.
    @discardableResult
    func addMember(_ roomID: String, _ userID: String, role: String = "member") throws -> Bool {
        try db.query("""
            INSERT INTO room_members (room_id, user_id, role, last_read_seq)
            SELECT $1, $2, $3, last_seq FROM rooms WHERE id = $1
            ON CONFLICT (room_id, user_id) DO NOTHING
            """, [roomID, userID, role]).affected == 1
    }

    /// Removes a member; when the owner leaves a room that still has members, the
    /// longest-standing admin (else member) becomes owner.
    @discardableResult
    func removeMember(_ roomID: String, _ userID: String) throws -> Bool {
        try db.transaction { db in
            let removed = try db.query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2 RETURNING role",
                                       [roomID, userID]).first.map { try $0.string("role") }
            if removed == "owner" {
                try db.query("""
                    UPDATE room_members SET role = 'owner' WHERE (room_id, user_id) = (
                        SELECT room_id, user_id FROM room_members WHERE room_id = $1
                        ORDER BY (role = 'admin') DESC, joined_at LIMIT 1)
                    """, [roomID])
            }
            return removed != nil
        }
    }

    func member(_ roomID: String, _ userID: String) throws -> Member? {
        try db.query("""
            SELECT m.user_id::text AS user_id, u.display_name, m.role,
                   to_char(m.joined_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS joined_at
            FROM room_members m JOIN users u ON u.id = m.user_id WHERE m.room_id = $1 AND m.user_id = $2
            """, [roomID, userID]).first.map(RoomStore.member)
    }

    static func member(_ row: PostgresRow) throws -> Member {
        Member(user_id: try row.string("user_id"), display_name: try row.string("display_name"),
               role: try row.string("role"), joined_at: try row.string("joined_at"))
    }

    func members(_ roomID: String) throws -> [Member] {
        try db.query("""
            SELECT m.user_id::text AS user_id, u.display_name, m.role,
                   to_char(m.joined_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS joined_at
            FROM room_members m JOIN users u ON u.id = m.user_id WHERE m.room_id = $1 ORDER BY m.joined_at, u.display_name
            """, [roomID]).map(RoomStore.member)
    }

    func myRooms(_ userID: String) throws -> [MyRoom] {
        try db.query("""
            SELECT \(RoomStore.roomColumns), m.last_read_seq
            FROM room_members m JOIN rooms r ON r.id = m.room_id WHERE m.user_id = $1 ORDER BY r.last_seq DESC, r.created_at DESC
            """, [userID]).map { row in
            let r = try RoomStore.room(row)
            let read = try row.int("last_read_seq")
            return MyRoom(id: r.id, name: r.name, kind: r.kind, created_by: r.created_by, created_at: r.created_at,
                          last_seq: r.last_seq, member_count: r.member_count, unread: max(0, r.last_seq - read), last_read_seq: read)
        }
    }

    func roomIDs(of userID: String) throws -> [String] {
        try db.query("SELECT room_id::text AS room_id FROM room_members WHERE user_id = $1", [userID]).map { try $0.string("room_id") }
    }

    func publicRooms(query: String, limit: Int) throws -> [Room] {
        try db.query("""
            SELECT \(RoomStore.roomColumns) FROM rooms r
            WHERE r.kind = 'public' AND ($1 = '' OR position(lower($1) in lower(r.name)) > 0)
            ORDER BY lower(r.name), r.created_at LIMIT $2
            """, [query, limit]).map(RoomStore.room)
    }

    /// Moves the read marker forward only, clamped to the room's last seq; returns it.
    func markRead(_ roomID: String, _ userID: String, seq: Int64) throws -> Int64? {
        try db.query("""
            UPDATE room_members m SET last_read_seq = GREATEST(m.last_read_seq, LEAST($3::bigint, r.last_seq))
            FROM rooms r WHERE r.id = m.room_id AND m.room_id = $1 AND m.user_id = $2
            RETURNING m.last_read_seq
            """, [roomID, userID, seq]).first.map { try $0.int("last_read_seq") }
    }
}
