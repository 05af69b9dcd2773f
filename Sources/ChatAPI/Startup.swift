import Foundation
import Logging
import ChatCore

/// Start-up work that needs the data services: schema migrations (PostgreSQL, under an
/// advisory lock) and MongoDB indexes. It retries until the services answer, so a process
/// that starts before its database recovers by itself instead of crash-looping.
public enum Startup {
    public static func prepareDatabases(settings: ServiceSettings, mongo: MongoPool, migrationsDir: String,
                                        logger: Logger, retryDelay: Double = 2) {
        var migrated = false, indexed = false
        while !(migrated && indexed) {
            if !migrated {
                do {
                    let db = PostgresConnection(conninfo: settings.pgConninfo)
                    let applied = try Migrator(directory: migrationsDir).run(on: db)
                    logger.info("schema ready", metadata: ["applied": "\(applied)"])
                    migrated = true
                } catch {
                    logger.warning("migrations not applied yet", metadata: ["error": "\(error)"])
                }
            }
            if !indexed {
                do {
                    let mode = try MessageIndexes.ensure(mongo)
                    SearchModeSetting.current = mode
                    logger.info("mongodb indexes ready", metadata: ["search": "\(mode.rawValue)"])
                    indexed = true
                } catch {
                    logger.warning("mongodb indexes not ready yet", metadata: ["error": "\(error)"])
                }
            }
            if !(migrated && indexed) { Thread.sleep(forTimeInterval: retryDelay) }
        }
    }
}
