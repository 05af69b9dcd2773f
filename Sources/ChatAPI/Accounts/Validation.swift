import Foundation
import ChatCore

/// Input rules of API.md, one function per field; each throws the 400 naming the field.
public enum Validate {
    /// The bound on the raw value of a field limited to `characters` characters: at most
    /// 4 Unicode scalars per character, counted before trimming. The character limit
    /// (grapheme clusters, after trimming) is what people see; this one keeps a value of
    /// few characters but endless combining marks out, and is what docs/openapi.yaml
    /// states as maxLength (JSON Schema counts code points).
    public static func fitsRaw(_ raw: String, characters: Int) -> Bool {
        raw.unicodeScalars.count <= 4 * characters
    }

    public static func email(_ raw: String) throws(APIError) -> String {
        let email = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        let bad = APIError.badRequest("invalid_email", "Enter a valid email address (at most 254 characters).")
        guard fitsRaw(raw, characters: 254), !email.isEmpty, email.count <= 254,
              email.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f && $0 != "<" && $0 != ">" && $0 != "," && $0 != ";" && $0 != "\"" && $0 != "\\" })
        else { throw bad }
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].count <= 64 else { throw bad }
        let domain = parts[1]
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, labels.allSatisfy({ !$0.isEmpty && !$0.hasPrefix("-") && !$0.hasSuffix("-") }) else { throw bad }
        return email
    }

    public static func password(_ password: String) throws(APIError) {
        let n = password.unicodeScalars.count
        guard n >= 8, n <= 256 else {
            throw APIError.badRequest("weak_password", "The password needs 8 to 256 characters.")
        }
    }

    public static func displayName(_ raw: String) throws(APIError) -> String {
        let name = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard fitsRaw(raw, characters: 64), !name.isEmpty, name.count <= 64, !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw APIError.badRequest("invalid_display_name", "The display name needs 1 to 64 characters.")
        }
        return name
    }

    /// A UUID path or body parameter; anything else cannot name an existing row.
    public static func uuid(_ raw: String, notFound: APIError = .notFound()) throws(APIError) -> String {
        guard let u = UUID(uuidString: raw) else { throw notFound }
        return u.uuidString.lowercased()
    }
}
