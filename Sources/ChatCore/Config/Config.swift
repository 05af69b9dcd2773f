import Foundation

/// The one configuration all three processes read: a `KEY=VALUE` file (default
/// `/etc/swiftchat/swiftchat.conf`, or the path in `SWIFTCHAT_CONFIG`) with environment
/// variables of the same name overriding it. systemd's `EnvironmentFile=` reads the same format.
public struct Config: Sendable {
    public private(set) var values: [String: String]
    public let sourcePath: String?

    public static let defaultPath = "/etc/swiftchat/swiftchat.conf"

    public init(values: [String: String], sourcePath: String? = nil) {
        self.values = values
        self.sourcePath = sourcePath
    }

    /// Loads the file (if present) and overlays the process environment.
    public static func load(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Config {
        let path = environment["SWIFTCHAT_CONFIG"] ?? defaultPath
        var values: [String: String] = [:]
        var source: String? = nil
        if FileManager.default.fileExists(atPath: path) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigError.unreadable(path)
            }
            values = try parse(text, path: path)
            source = path
        } else if environment["SWIFTCHAT_CONFIG"] != nil {
            throw ConfigError.unreadable(path)
        }
        for (key, value) in environment where isConfigKey(key) {
            values[key] = value
        }
        return Config(values: values, sourcePath: source)
    }

    /// Keys are upper-case with underscores; only those are taken from the environment
    /// so that unrelated variables (PATH, HOME) never shadow a setting by accident.
    static func isConfigKey(_ key: String) -> Bool {
        !key.isEmpty && key.allSatisfy { $0.isUppercase || $0.isNumber || $0 == "_" } && key.first!.isLetter
    }

    public static func parse(_ text: String, path: String = "<string>") throws -> [String: String] {
        var result: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError.syntax(path: path, line: index + 1)
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
                    .replacingOccurrences(of: "\\\"", with: "\"")
                    .replacingOccurrences(of: "\\\\", with: "\\")
            }
            guard isConfigKey(key) else { throw ConfigError.syntax(path: path, line: index + 1) }
            result[key] = value
        }
        return result
    }

    public subscript(key: String) -> String? {
        get { values[key].flatMap { $0.isEmpty ? nil : $0 } }
        set { values[key] = newValue }
    }

    public func string(_ key: String, default fallback: String) -> String { self[key] ?? fallback }

    public func require(_ key: String) throws -> String {
        guard let v = self[key] else { throw ConfigError.missing(key) }
        return v
    }

    public func int(_ key: String, default fallback: Int) throws -> Int {
        guard let raw = self[key] else { return fallback }
        guard let v = Int(raw) else { throw ConfigError.invalid(key, raw) }
        return v
    }

    public func intList(_ key: String, default fallback: [Int]) throws -> [Int] {
        guard let raw = self[key] else { return fallback }
        let parts = raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let ints = parts.compactMap(Int.init)
        guard ints.count == parts.count, !ints.isEmpty else { throw ConfigError.invalid(key, raw) }
        return ints
    }
}

public enum ConfigError: Error, CustomStringConvertible {
    case unreadable(String)
    case syntax(path: String, line: Int)
    case missing(String)
    case invalid(String, String)

    public var description: String {
        switch self {
        case .unreadable(let p): return "cannot read config file \(p)"
        case .syntax(let p, let l): return "\(p):\(l): expected KEY=VALUE"
        case .missing(let k): return "config key \(k) is required"
        case .invalid(let k, _): return "config key \(k) has an invalid value"
        }
    }
}

/// The settings every process shares, decoded once from `Config`.
public struct ServiceSettings: Sendable {
    public var publicURL: String
    public var pgConninfo: String
    public var mongoURL: String
    public var mongoDatabase: String
    public var redisHost: String
    public var redisPort: Int
    public var redisPassword: String?
    public var amqpURL: String
    public var jwtSecret: [UInt8]
    public var smtpURL: String
    public var smtpFrom: String
    public var smtpUser: String?
    public var smtpPassword: String?

    public init(_ config: Config) throws {
        publicURL = config.string("PUBLIC_URL", default: "https://localhost")
        while publicURL.hasSuffix("/") { publicURL.removeLast() }
        pgConninfo = config.string("PG_CONNINFO", default: "host=/run/postgresql dbname=swiftchat connect_timeout=3")
        mongoURL = config.string("MONGO_URL", default: "mongodb://127.0.0.1:27017/?connectTimeoutMS=3000&serverSelectionTimeoutMS=3000&socketTimeoutMS=5000")
        mongoDatabase = config.string("MONGO_DB", default: "swiftchat")
        redisHost = config.string("REDIS_HOST", default: "127.0.0.1")
        redisPort = try config.int("REDIS_PORT", default: 6379)
        redisPassword = config["REDIS_PASSWORD"]
        amqpURL = config.string("AMQP_URL", default: "amqp://guest:guest@127.0.0.1:5672/%2f")
        smtpURL = config.string("SMTP_URL", default: "smtp://127.0.0.1:25")
        smtpFrom = config.string("SMTP_FROM", default: "swiftchat <noreply@localhost>")
        smtpUser = config["SMTP_USER"]
        smtpPassword = config["SMTP_PASSWORD"]
        let secret = try config.require("JWT_SECRET")
        guard let bytes = Hex.decode(secret), bytes.count >= 32 else {
            throw ConfigError.invalid("JWT_SECRET", "(at least 32 bytes as hex)")
        }
        jwtSecret = bytes
    }
}
