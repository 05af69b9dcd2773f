import Foundation
import Logging

/// Applies numbered SQL files (`0001_init.sql`, `0002_...sql`) once each, in order, under a
/// PostgreSQL advisory lock so that several processes starting together apply them once.
public struct Migrator {
    public struct Migration: Equatable {
        public let version: Int
        public let name: String
        public let sql: String
    }

    /// An arbitrary constant shared by every swiftchat process.
    static let lockKey: Int64 = 0x5357_4946_5443_4854

    public let directory: String
    let logger = Logger(label: "migrations")

    public init(directory: String) { self.directory = directory }

    public static func parseFileName(_ file: String) -> (Int, String)? {
        guard file.hasSuffix(".sql") else { return nil }
        let stem = file.dropLast(4)
        let parts = stem.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, let v = Int(parts[0]), v > 0 else { return nil }
        return (v, String(parts[1]))
    }

    public func load() throws -> [Migration] {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        var out = [Migration]()
        for f in files {
            guard let (v, name) = Migrator.parseFileName(f) else { continue }
            let sql = try String(contentsOfFile: directory + "/" + f, encoding: .utf8)
            out.append(Migration(version: v, name: name, sql: sql))
        }
        out.sort { $0.version < $1.version }
        for (a, b) in zip(out, out.dropFirst()) where a.version == b.version {
            throw PostgresError(sqlState: "XX000", message: "two migrations numbered \(a.version)")
        }
        return out
    }

    /// Returns the versions applied by this call.
    @discardableResult
    public func run(on db: PostgresConnection) throws -> [Int] {
        let migrations = try load()
        try db.query("SELECT pg_advisory_lock($1)", [Migrator.lockKey])
        defer { _ = try? db.query("SELECT pg_advisory_unlock($1)", [Migrator.lockKey]) }
        try db.executeScript("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
        let done = Set(try db.query("SELECT version FROM schema_migrations").map { try $0.int("version") })
        var applied = [Int]()
        for m in migrations where !done.contains(Int64(m.version)) {
            try db.transaction { tx in
                try tx.executeScript(m.sql)
                try tx.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name])
            }
            logger.info("applied migration", metadata: ["version": "\(m.version)", "name": "\(m.name)"])
            applied.append(m.version)
        }
        return applied
    }
}
