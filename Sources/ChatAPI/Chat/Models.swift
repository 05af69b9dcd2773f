import Foundation
import ChatCore

/// Room of API.md.
public struct Room: Codable, Sendable, Equatable {
    public let id: String
    public let name: String
    public let kind: String
    public let created_by: String
    public let created_at: String
    public let last_seq: Int64
    public let member_count: Int64
}

/// A room in the caller's list, with their read marker.
public struct MyRoom: Encodable, Sendable {
    public let id, name, kind, created_by, created_at: String
    public let last_seq, member_count, unread, last_read_seq: Int64
}

public struct Member: Codable, Sendable, Equatable {
    public let user_id: String
    public let display_name: String
    public let role: String
    public let joined_at: String
    /// Presence snapshot, only in the members list (absent elsewhere).
    public var online: Bool? = nil
}

/// Message of API.md, as stored in MongoDB (plus `_id`, `created_ms`) and as sent.
public struct Message: Codable, Sendable, Equatable {
    public let id: String
    public let room_id: String
    public let seq: Int64
    public let author_id: String
    public var body: String
    public let created_at: String
    public var edited_at: String?
    public var deleted: Bool
    public let client_id: String?

    enum CodingKeys: String, CodingKey {
        case id, room_id, seq, author_id, body, created_at, edited_at, deleted, client_id
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(room_id, forKey: .room_id)
        try c.encode(seq, forKey: .seq)
        try c.encode(author_id, forKey: .author_id)
        try c.encode(body, forKey: .body)
        try c.encode(created_at, forKey: .created_at)
        try c.encode(edited_at, forKey: .edited_at)   // null, not absent
        try c.encode(deleted, forKey: .deleted)
        try c.encode(client_id, forKey: .client_id)
    }

    /// From a stored document (relaxed extended JSON: `_id` is the id).
    static func from(document json: String) throws -> Message {
        guard let obj = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let id = obj["_id"] as? String, let room = obj["room_id"] as? String,
              let author = obj["author_id"] as? String, let created = obj["created_at"] as? String
        else { throw MalformedDocument(detail: "message document") }
        let seq: Int64
        if let n = obj["seq"] as? NSNumber { seq = n.int64Value }
        else if let d = obj["seq"] as? [String: Any], let s = d["$numberLong"] as? String, let n = Int64(s) { seq = n }
        else { throw MalformedDocument(detail: "message seq") }
        return Message(id: id, room_id: room, seq: seq, author_id: author, body: obj["body"] as? String ?? "",
                       created_at: created, edited_at: obj["edited_at"] as? String, deleted: obj["deleted"] as? Bool ?? false,
                       client_id: obj["client_id"] as? String)
    }

    /// The stored document.
    func document(createdMillis: Int64) -> String {
        var obj: [String: Any] = [
            "_id": id, "room_id": room_id, "seq": seq, "author_id": author_id, "body": body,
            "created_at": created_at, "created_ms": createdMillis, "deleted": deleted,
            "edited_at": edited_at ?? NSNull(), "client_id": client_id ?? NSNull(),
        ]
        if client_id == nil { obj.removeValue(forKey: "client_id") } // the partial unique index covers strings only
        return String(decoding: try! JSONSerialization.data(withJSONObject: obj), as: UTF8.self)
    }
}

/// Events published on the chat-events exchange and pushed to sockets as they are.
enum Events {
    struct MessageEvent: Encodable { let type: String; let room_id: String; let message: Message }
    struct MessageDeleted: Encodable { let type = "message.deleted"; let room_id: String; let message_id: String; let seq: Int64 }
    struct MemberEvent: Encodable { let type: String; let room_id: String; let user_id: String }
    struct ReadEvent: Encodable { let type = "room.read"; let room_id: String; let seq: Int64 }

    /// Publishes with a confirm. `x-event` and `x-user` headers let the relays act on an
    /// event (membership changes, typing echo suppression) without parsing its JSON.
    static func publish(_ ctx: RequestContext, key: String, type: String, user: String, body: [UInt8]) throws {
        try ctx.services.amqp.publish(exchange: Topology.eventsExchange, routingKey: key, body: body, mandatory: false,
                                      persistent: false, headers: ["x-event": .string(type), "x-user": .string(user)])
    }
}

/// A stored document that does not have the shape we write: a bug or tampering (500, logged).
struct MalformedDocument: Error, CustomStringConvertible {
    let detail: String
    var description: String { "malformed \(detail)" }
}
