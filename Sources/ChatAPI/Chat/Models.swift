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

    /// The stored document, as JSON for bson_new_from_json (which stores each number as an
    /// int32 or int64 by its size, as before). Written by hand: it is on every send.
    /// `client_id` is left out when there is none (the partial unique index covers strings only).
    func document(createdMillis: Int64) -> String {
        var s = "{\"_id\":" + JSON.quote(id) + ",\"room_id\":" + JSON.quote(room_id)
        s += ",\"seq\":" + String(seq) + ",\"author_id\":" + JSON.quote(author_id)
        s += ",\"body\":" + JSON.quote(body) + ",\"created_at\":" + JSON.quote(created_at)
        s += ",\"created_ms\":" + String(createdMillis) + ",\"deleted\":" + (deleted ? "true" : "false")
        s += ",\"edited_at\":" + (edited_at.map(JSON.quote) ?? "null")
        if let client_id { s += ",\"client_id\":" + JSON.quote(client_id) }
        return s + "}"
    }

    /// The API's JSON of a message, as `encode(to:)` gives it through JSON.encode (the same
    /// keys in the same sorted order, `edited_at` and `client_id` as null when absent),
    /// written by hand because a send encodes it for its reply and its event.
    var json: [UInt8] {
        var s = "{\"author_id\":" + JSON.quote(author_id) + ",\"body\":" + JSON.quote(body)
        s += ",\"client_id\":" + (client_id.map(JSON.quote) ?? "null") + ",\"created_at\":" + JSON.quote(created_at)
        s += ",\"deleted\":" + (deleted ? "true" : "false") + ",\"edited_at\":" + (edited_at.map(JSON.quote) ?? "null")
        s += ",\"id\":" + JSON.quote(id) + ",\"room_id\":" + JSON.quote(room_id) + ",\"seq\":" + String(seq) + "}"
        return Array(s.utf8)
    }

    /// The `message.created` / `message.updated` event around `json` (see Events.MessageEvent).
    func event(_ type: String, json: [UInt8]) -> [UInt8] {
        Array(("{\"message\":").utf8) + json + Array((",\"room_id\":" + JSON.quote(room_id) + ",\"type\":" + JSON.quote(type) + "}").utf8)
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
