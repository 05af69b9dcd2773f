import Foundation

/// A frame a WebSocket client sends, parsed and validated (see docs/websocket.md).
public enum ClientFrame: Equatable, Sendable {
    case auth(token: String)
    case ping
    case typing(roomID: String)
    /// Not understood: answered with an error frame; the connection stays open.
    case invalid(code: String, message: String)

    public static func parse(_ text: String) -> ClientFrame {
        guard let data = text.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data),
              let dict = object as? [String: Any] else {
            return .invalid(code: "malformed_frame", message: "A frame must be a JSON object.")
        }
        guard let type = dict["type"] as? String else {
            return .invalid(code: "malformed_frame", message: "A frame needs a string \"type\".")
        }
        switch type {
        case "auth":
            guard let token = dict["token"] as? String, !token.isEmpty else {
                return .invalid(code: "malformed_frame", message: "auth needs a \"token\".")
            }
            return .auth(token: token)
        case "ping":
            return .ping
        case "typing":
            guard let room = dict["room_id"] as? String, UUID(uuidString: room) != nil else {
                return .invalid(code: "malformed_frame", message: "typing needs a \"room_id\" (UUID).")
            }
            return .typing(roomID: room.lowercased())
        default:
            return .invalid(code: "unknown_type", message: "Unknown frame type.")
        }
    }
}

/// Close codes of the WebSocket protocol (API.md).
public enum RelayCloseCode {
    public static let goingAway: UInt16 = 1001          // relay shutting down: reconnect elsewhere
    public static let protocolError: UInt16 = 1002      // a frame that breaks RFC 6455
    public static let invalidPayload: UInt16 = 1007     // a text message that is not UTF-8
    public static let messageTooLarge: UInt16 = 1009     // frame or message over 16 KiB
    public static let tryAgainLater: UInt16 = 1013       // too slow a reader: reconnect and resume
    public static let unauthorized: UInt16 = 4401        // no/bad auth, or session revoked
}
