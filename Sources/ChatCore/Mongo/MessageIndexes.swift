import Foundation

/// The indexes of the `messages` collection (chat history).
public enum MessageIndexes {
    public static let collection = "messages"

    /// How message search runs: a text index on a real mongod; where the server has no text
    /// indexes (SecantusDB), a case-insensitive regex limited to the caller's rooms.
    public enum SearchMode: String, Sendable {
        case textIndex = "text-index"
        case regex = "regex"
    }

    @discardableResult
    public static func ensure(_ pool: MongoPool) throws -> SearchMode {
        try pool.collection(collection) { c in
            try c.createIndexes("""
                [{"key": {"room_id": 1, "seq": 1}, "name": "room_seq", "unique": true},
                 {"key": {"room_id": 1, "author_id": 1, "client_id": 1}, "name": "room_author_client", "unique": true,
                  "partialFilterExpression": {"client_id": {"$type": "string"}}}]
                """)
            do {
                try c.createIndexes(#"[{"key": {"body": "text"}, "name": "body_text"}]"#)
                return .textIndex
            } catch let e as MongoError {
                // Code 67 "text indexes are not supported" (SecantusDB); anything else is real.
                guard e.code == 67 || e.message.lowercased().contains("text") else { throw e }
                return .regex
            }
        }
    }
}
