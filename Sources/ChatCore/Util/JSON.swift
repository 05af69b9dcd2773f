import Foundation

public enum JSON {
    /// A JSON string literal for `s`.
    public static func quote(_ s: String) -> String { JSONLineLogHandler.quote(s) }

    /// One configured encoder for the process: its options never change after this, and
    /// encode() keeps its state per call, so sharing it across threads is safe and saves
    /// building an encoder for every response.
    nonisolated(unsafe) private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return encoder
    }()

    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        // Encoding our own model types cannot fail; a failure here is a programming error.
        Array(try! encoder.encode(value))
    }

    /// Decodes a request body. Any syntax or type error is a 400 naming what was wrong,
    /// without echoing the input back.
    public static func decodeBody<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(APIError) -> T {
        guard !bytes.isEmpty else { throw APIError.badRequest("invalid_json", "The request needs a JSON body.") }
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw APIError.badRequest("invalid_field", "Field \(path(ctx)) has the wrong type.")
        } catch let DecodingError.valueNotFound(_, ctx) {
            throw APIError.badRequest("invalid_field", "Field \(path(ctx)) must not be null.")
        } catch let DecodingError.keyNotFound(key, ctx) {
            let p = (ctx.codingPath + [key]).map(\.stringValue).joined(separator: ".")
            throw APIError.badRequest("missing_field", "Field \(p) is required.")
        } catch {
            throw APIError.badRequest("invalid_json", "The request body is not valid JSON.")
        }
    }

    private static func path(_ ctx: DecodingError.Context) -> String {
        let p = ctx.codingPath.map(\.stringValue).joined(separator: ".")
        return p.isEmpty ? "(body)" : p
    }
}
