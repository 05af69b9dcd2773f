import Foundation
import CPostgres

/// A value that travels to PostgreSQL as a bind parameter (text format). There is no way
/// to splice a value into SQL text through this API: SQL injection is made hard by construction.
public protocol PostgresBindable: Sendable {
    var postgresText: String { get }
}
extension String: PostgresBindable { public var postgresText: String { self } }
extension Substring: PostgresBindable { public var postgresText: String { String(self) } }
extension Int: PostgresBindable { public var postgresText: String { String(self) } }
extension Int64: PostgresBindable { public var postgresText: String { String(self) } }
extension Int32: PostgresBindable { public var postgresText: String { String(self) } }
extension Double: PostgresBindable { public var postgresText: String { String(self) } }
extension Bool: PostgresBindable { public var postgresText: String { self ? "t" : "f" } }
extension UUID: PostgresBindable { public var postgresText: String { uuidString.lowercased() } }

/// A server-side error for one statement (the connection is fine): carries SQLSTATE.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public let sqlState: String
    public let message: String
    public var description: String { "PostgreSQL \(sqlState): \(message)" }

    public var isUniqueViolation: Bool { sqlState == "23505" }

    /// A table changed under a prepared statement (a migration by a newer process), or the
    /// server no longer knows it (26000, e.g. after DISCARD ALL): prepare it again next time.
    var needsPreparingAgain: Bool { (sqlState == "0A000" && message.contains("cached plan")) || sqlState == "26000" }
}

/// Result rows, copied out of the PGresult so no C pointer outlives the call.
public struct PostgresRows: Sendable, Sequence {
    public let columns: [String]
    public let rows: [[String?]]
    public let affected: Int

    public var count: Int { rows.count }
    public var first: PostgresRow? { rows.first.map { PostgresRow(columns: columns, values: $0) } }

    public func makeIterator() -> AnyIterator<PostgresRow> {
        var it = rows.makeIterator()
        let cols = columns
        return AnyIterator { it.next().map { PostgresRow(columns: cols, values: $0) } }
    }
}

/// Typed access to one row by column name. A missing column or a value of the wrong
/// shape is a programming error in the query, reported as `PostgresError` "XX000".
public struct PostgresRow: Sendable {
    public let columns: [String]
    public let values: [String?]

    private func raw(_ name: String) throws -> String? {
        guard let i = columns.firstIndex(of: name) else {
            throw PostgresError(sqlState: "XX000", message: "no column \(name) in result")
        }
        return values[i]
    }

    public func isNull(_ name: String) throws -> Bool { try raw(name) == nil }

    public func string(_ name: String) throws -> String {
        guard let v = try raw(name) else { throw PostgresError(sqlState: "XX000", message: "column \(name) is null") }
        return v
    }

    public func optionalString(_ name: String) throws -> String? { try raw(name) }

    public func int(_ name: String) throws -> Int64 {
        guard let v = try optionalInt(name) else { throw PostgresError(sqlState: "XX000", message: "column \(name) is null") }
        return v
    }

    public func optionalInt(_ name: String) throws -> Int64? {
        guard let s = try raw(name) else { return nil }
        guard let v = Int64(s) else { throw PostgresError(sqlState: "XX000", message: "column \(name) is not an integer") }
        return v
    }

    public func double(_ name: String) throws -> Double {
        guard let s = try raw(name), let v = Double(s) else { throw PostgresError(sqlState: "XX000", message: "column \(name) is not a number") }
        return v
    }

    public func bool(_ name: String) throws -> Bool {
        switch try raw(name) {
        case "t": return true
        case "f": return false
        default: throw PostgresError(sqlState: "XX000", message: "column \(name) is not a boolean")
        }
    }
}

/// One libpq connection, used by one thread at a time (each FastCGI thread owns one).
/// It connects lazily and reconnects on the next call after the server went away, so a
/// restarted PostgreSQL is picked up without restarting the process.
///
/// `@unchecked Sendable`: the PGconn is only touched from methods of this class, and
/// the owner never uses one instance from two threads at once.
public final class PostgresConnection: @unchecked Sendable {
    private var conn: OpaquePointer?
    private let conninfo: String
    private let statementTimeoutMs: Int
    /// Inside BEGIN...COMMIT a lost connection must fail the transaction, never retry a statement.
    private var inTransaction = false
    /// Statements with parameters are prepared once per connection (PQprepare) and run by
    /// name (PQexecPrepared): the server parses and plans each SQL text once, not on every
    /// call. Keyed by the SQL text; emptied with the connection. Bounded: the SQL texts are
    /// constants of this program, but a cap keeps a mistake from growing it without limit.
    private var prepared: [String: String] = [:]
    /// The next statement name's number. Not `prepared.count`: an entry dropped for
    /// re-preparing leaves its old statement on the server, and a count-derived name
    /// could then repeat a name still in use (42P05, on every later call).
    private var statementNumber = 0
    static let maxPrepared = 256

    /// Names this process's connections in pg_stat_activity (`application_name`), e.g.
    /// "swiftchat-fcgiapp/4711", so an operator sees which process holds which backend.
    /// Through libpq's PGAPPNAME: an application_name in the conninfo, or a PGAPPNAME the
    /// operator set, wins. Call at start, before any connection and any thread.
    public static func nameConnections(_ program: String) {
        setenv("PGAPPNAME", "swiftchat-\(program)/\(getpid())", 0)
    }

    public init(conninfo: String, statementTimeoutMs: Int = 10_000) {
        self.conninfo = PostgresConnection.withTimeouts(conninfo)
        self.statementTimeoutMs = statementTimeoutMs
    }

    deinit { if let conn { PQfinish(conn) } }

    /// Every network call has a timeout: add connect and TCP timeouts to a key=value
    /// conninfo that does not set them (a URL conninfo is taken as the operator wrote it).
    static func withTimeouts(_ conninfo: String) -> String {
        if conninfo.hasPrefix("postgres://") || conninfo.hasPrefix("postgresql://") { return conninfo }
        var out = conninfo
        if !out.contains("connect_timeout") { out += " connect_timeout=3" }
        if !out.contains("tcp_user_timeout") { out += " tcp_user_timeout=10000" }
        if !out.contains("keepalives_idle") { out += " keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3" }
        return out
    }

    public var isConnected: Bool { conn.map { PQstatus($0) == CONNECTION_OK } ?? false }

    public func close() {
        if let conn { PQfinish(conn) }
        conn = nil
        prepared.removeAll()
    }

    private func connection() throws -> OpaquePointer {
        if let conn, PQstatus(conn) == CONNECTION_OK { return conn }
        close()
        guard let c = PQconnectdb(conninfo) else { throw DependencyError(.postgresql, "out of memory") }
        guard PQstatus(c) == CONNECTION_OK else {
            let detail = String(cString: PQerrorMessage(c)).trimmingCharacters(in: .whitespacesAndNewlines)
            PQfinish(c)
            throw DependencyError(.postgresql, "connect: \(detail)")
        }
        conn = c
        do {
            _ = try run(c, "SET statement_timeout = \(statementTimeoutMs)", [])
        } catch {
            close()
            throw error
        }
        return c
    }

    /// Runs one parameterized statement. `$1, $2...` in `sql` take `params` in order.
    /// Outside a transaction, a connection that went stale while idle (the server
    /// restarted) is re-opened once and the statement sent again.
    @discardableResult
    public func query(_ sql: String, _ params: [(any PostgresBindable)?] = []) throws -> PostgresRows {
        let reused = conn != nil && !inTransaction
        do {
            return try run(try connection(), sql, params)
        } catch is DependencyError where reused {
            return try run(try connection(), sql, params)
        }
    }

    /// Raw SQL without parameters, possibly several statements: only for migrations and
    /// fixed administrative statements, never with input from a request.
    public func executeScript(_ sql: String) throws {
        let c = try connection()
        guard let res = PQexec(c, sql) else { throw lost(c) }
        defer { PQclear(res) }
        try check(res, c)
    }

    /// BEGIN ... COMMIT around `body`; ROLLBACK when it throws. `synchronousCommit: false`
    /// commits without waiting for the WAL flush (SET LOCAL synchronous_commit = off): only
    /// for a transaction whose loss in a server crash the caller repairs by itself.
    public func transaction<T>(synchronousCommit: Bool = true, _ body: (PostgresConnection) throws -> T) throws -> T {
        // One round trip either way (a constant text: the simple protocol takes both).
        try query(synchronousCommit ? "BEGIN" : "BEGIN; SET LOCAL synchronous_commit TO off")
        return try finishTransaction { try body(self) }
    }

    /// The same, with the transaction's first statement sent together with the BEGIN in one
    /// round trip (libpq pipeline mode); `body` gets that statement's rows. A transaction
    /// that starts by locking a row saves a round trip while nobody waits for the lock yet.
    public func transaction<T>(synchronousCommit: Bool = true, first sql: String, _ params: [(any PostgresBindable)?],
                               _ body: (PostgresConnection, PostgresRows) throws -> T) throws -> T {
        var statements: [(String, [(any PostgresBindable)?])] = [("BEGIN", [])]
        if !synchronousCommit { statements.append(("SET LOCAL synchronous_commit TO off", [])) }
        statements.append((sql, params))
        // No retry on a connection that went stale while idle, unlike `query`: the caller's
        // previous statement on this connection (a send's access check) has just found out.
        let results: [PostgresRows]
        do {
            results = try pipeline(statements)
        } catch {
            // BEGIN ran and a later statement failed (a lock or statement timeout, say):
            // end the failed transaction, unless the connection is gone with it.
            if isConnected { _ = try? query("ROLLBACK") }
            throw error
        }
        return try finishTransaction { try body(self, results[results.count - 1]) }
    }

    /// COMMIT after `body`, or ROLLBACK when it throws; the BEGIN has run.
    private func finishTransaction<T>(_ body: () throws -> T) throws -> T {
        inTransaction = true
        defer { inTransaction = false }
        do {
            let value = try body()
            try query("COMMIT")
            return value
        } catch {
            if isConnected { _ = try? query("ROLLBACK") }
            throw error
        }
    }

    /// Sends `statements` in one round trip (pipeline mode, one Sync) and returns each one's
    /// rows. The server skips the statements after a failing one; that error is thrown.
    /// Statements with parameters are prepared first (a statement's first use costs its own
    /// round trip, as in `query`).
    func pipeline(_ statements: [(String, [(any PostgresBindable)?])]) throws -> [PostgresRows] {
        let c = try connection()
        let names: [String?] = try statements.map { sql, params in
            params.isEmpty ? nil : try statementName(c, sql, parameters: params.count)
        }
        guard PQenterPipelineMode(c) == 1 else { throw lost(c) }
        for (i, (sql, params)) in statements.enumerated() {
            let sent: Int32
            if let name = names[i] {
                sent = withParameterTexts(params) { values, count in PQsendQueryPrepared(c, name, count, values, nil, nil, 0) }
            } else {
                sent = PQsendQueryParams(c, sql, 0, nil, nil, nil, nil, 0)
            }
            // Nothing sensible can follow a half-sent pipeline: drop the connection.
            guard sent == 1 else { throw lost(c) }
        }
        guard PQpipelineSync(c) == 1 else { throw lost(c) }
        var results: [PostgresRows] = []
        var failure: Error? = nil
        for (sql, _) in statements {
            guard let res = PQgetResult(c) else { throw lost(c) }
            defer { PQclear(res) }
            if PQresultStatus(res) == PGRES_PIPELINE_ABORTED {
                results.append(PostgresRows(columns: [], rows: [], affected: 0))
            } else {
                do {
                    try check(res, c)
                    results.append(rows(res))
                } catch {
                    if !isConnected { throw error } // the connection is gone (closed by check)
                    if let e = error as? PostgresError, e.needsPreparingAgain { prepared.removeValue(forKey: sql) }
                    if failure == nil { failure = error }
                    results.append(PostgresRows(columns: [], rows: [], affected: 0))
                }
            }
            // Each statement's results end with a NULL.
            if let extra = PQgetResult(c) { PQclear(extra); throw lost(c) }
        }
        guard let sync = PQgetResult(c) else { throw lost(c) }
        let synced = PQresultStatus(sync) == PGRES_PIPELINE_SYNC
        PQclear(sync)
        guard synced, PQexitPipelineMode(c) == 1 else { throw lost(c) }
        if let failure { throw failure }
        return results
    }

    /// A round trip, for health checks.
    public func ping() throws { try query("SELECT 1") }

    /// Connects if needed and prepares `sql` (with `parameters` parameters) on this
    /// connection, as its first use would: a process warms its connections with the
    /// statements of its hot paths at start, so the first requests after a restart pay
    /// neither the connect nor the parse and plan (nor a new backend's catalog loads).
    public func prepare(_ sql: String, parameters: Int) throws {
        _ = try statementName(try connection(), sql, parameters: parameters)
    }

    /// The name of `sql` prepared on `c`, preparing it first if needed.
    private func statementName(_ c: OpaquePointer, _ sql: String, parameters: Int) throws -> String {
        if let name = prepared[sql] { return name }
        if prepared.count >= PostgresConnection.maxPrepared {
            if let res = PQexec(c, "DEALLOCATE ALL") { PQclear(res) }
            prepared.removeAll()
        }
        statementNumber += 1
        let name = "s\(statementNumber)"
        guard let res = PQprepare(c, name, sql, Int32(parameters), nil) else { throw lost(c) }
        defer { PQclear(res) }
        try check(res, c)
        prepared[sql] = name
        return name
    }

    private func run(_ c: OpaquePointer, _ sql: String, _ params: [(any PostgresBindable)?]) throws -> PostgresRows {
        let res: OpaquePointer?
        if params.isEmpty {
            // A constant statement without parameters (BEGIN, COMMIT, SELECT 1, SET ...):
            // one simple-protocol message.
            res = PQexec(c, sql)
        } else {
            let name = try statementName(c, sql, parameters: params.count)
            res = withParameterTexts(params) { values, count in PQexecPrepared(c, name, count, values, nil, nil, 0) }
        }
        guard let res else { throw lost(c) }
        defer { PQclear(res) }
        do {
            try check(res, c)
        } catch let e as PostgresError where e.needsPreparingAgain {
            prepared.removeValue(forKey: sql)
            throw e
        }
        return rows(res)
    }

    /// `params` as the text values libpq takes (NULL for nil), valid inside `body`.
    private func withParameterTexts<T>(_ params: [(any PostgresBindable)?],
                                       _ body: (UnsafePointer<UnsafePointer<CChar>?>, Int32) -> T) -> T {
        let texts: [UnsafeMutablePointer<CChar>?] = params.map { $0.map { strdup($0.postgresText) } ?? nil }
        defer { texts.forEach { free($0) } }
        return texts.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: texts.count) { body($0, Int32(texts.count)) }
        }
    }

    /// The rows of a successful result, copied out.
    private func rows(_ res: OpaquePointer) -> PostgresRows {
        let nrows = Int(PQntuples(res)), ncols = Int(PQnfields(res))
        var columns = [String]()
        columns.reserveCapacity(ncols)
        for j in 0..<ncols { columns.append(String(cString: PQfname(res, Int32(j)))) }
        var rows = [[String?]]()
        rows.reserveCapacity(nrows)
        for i in 0..<nrows {
            var row = [String?]()
            row.reserveCapacity(ncols)
            for j in 0..<ncols {
                if PQgetisnull(res, Int32(i), Int32(j)) == 1 {
                    row.append(nil)
                } else {
                    row.append(String(cString: PQgetvalue(res, Int32(i), Int32(j))))
                }
            }
            rows.append(row)
        }
        let affected = Int(String(cString: PQcmdTuples(res))) ?? 0
        return PostgresRows(columns: columns, rows: rows, affected: affected)
    }

    private func check(_ res: OpaquePointer, _ c: OpaquePointer) throws {
        switch PQresultStatus(res) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return
        default:
            if PQstatus(c) != CONNECTION_OK { throw lost(c) }
            let field = { (code: UInt8) -> String in
                PQresultErrorField(res, Int32(code)).map { String(cString: $0) } ?? ""
            }
            let state = field(UInt8(ascii: "C"))
            // Class 08 (connection exception) and 57P0x (shutdown) mean the server is going away.
            if state.hasPrefix("08") || state.hasPrefix("57P") {
                close()
                throw DependencyError(.postgresql, "\(state): \(field(UInt8(ascii: "M")))")
            }
            // 57014 (statement timeout) and 55P03 (lock not available): the server is too
            // busy to answer in time. The connection is fine (the caller's ROLLBACK clears the
            // transaction); the client gets 503 postgresql_unavailable with Retry-After, not 500.
            if state == "57014" || state == "55P03" {
                throw DependencyError(.postgresql, "\(state): \(field(UInt8(ascii: "M")))")
            }
            throw PostgresError(sqlState: state.isEmpty ? "XX000" : state, message: field(UInt8(ascii: "M")))
        }
    }

    private func lost(_ c: OpaquePointer) -> DependencyError {
        let detail = String(cString: PQerrorMessage(c)).trimmingCharacters(in: .whitespacesAndNewlines)
        close()
        return DependencyError(.postgresql, detail.isEmpty ? "connection lost" : detail)
    }
}
