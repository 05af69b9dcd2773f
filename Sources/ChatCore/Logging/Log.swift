import Foundation
import Logging

/// One JSON object per line on stderr (journald and the stack's log files take it as is).
/// Secrets never reach a log: callers log ids and codes, never tokens, passwords or bodies.
public struct JSONLineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        var fields: [String: String] = [:]
        for (k, v) in metadata { fields[k] = "\(v)" }
        if let explicit { for (k, v) in explicit { fields[k] = "\(v)" } }
        var out = "{\"ts\":\"\(Timestamp.format(Date()))\",\"level\":\"\(level)\",\"logger\":\(JSONLineLogHandler.quote(label)),\"msg\":\(JSONLineLogHandler.quote(message.description))"
        for key in fields.keys.sorted() {
            out += ",\(JSONLineLogHandler.quote(key)):\(JSONLineLogHandler.quote(fields[key]!))"
        }
        out += "}\n"
        out.withCString { ptr in
            _ = Glibc.write(2, ptr, strlen(ptr))
        }
    }

    static func quote(_ s: String) -> String {
        // Most strings need no escape: copy them whole.
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) { return "\"" + s + "\"" }
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

public enum Log {
    /// Call once at process start, before any Logger is made.
    public static func bootstrap(_ config: Config) {
        let level = Logger.Level(rawValue: config.string("LOG_LEVEL", default: "info").lowercased()) ?? .info
        LoggingSystem.bootstrap { label in JSONLineLogHandler(label: label, level: level) }
    }
}
