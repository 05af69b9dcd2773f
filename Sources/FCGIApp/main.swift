// FCGIApp: the REST API as a FastCGI pool process behind nginx. Threads share one
// listening socket and each accepts with FCGX_Accept_r; every thread owns its own
// connections. Run several processes (systemd template units) behind one nginx upstream.
import Foundation
import Logging
import ChatCore
import ChatAPI

ShutdownSignal.block()
PasswordHasher.returnMemoryAfterEachHash()
let logger: Logger
let config: Config
do {
    config = try Config.load()
    Log.bootstrap(config)
    logger = Logger(label: "fcgiapp")
} catch {
    FileHandle.standardError.write(Data("fcgiapp: \(error)\n".utf8))
    exit(78) // EX_CONFIG: systemd does not restart-loop a broken config forever
}

do {
    let settings = try ServiceSettings(config)
    let threads = try config.int("FCGI_THREADS", default: 16)
    let socketPath = config.string("FCGI_SOCKET", default: "/run/swiftchat/fcgi.sock")
    let socketMode = mode_t(config.string("FCGI_SOCKET_MODE", default: "666"), radix: 8) ?? 0o666
    let migrationsDir = config.string("MIGRATIONS_DIR", default: "/usr/share/swiftchat/migrations")
    let mongo = try MongoPool(url: settings.mongoURL, database: settings.mongoDatabase, maxPoolSize: threads)

    let accounts = try AccountSettings(config, publicURL: settings.publicURL)
    let services = try (0..<threads).map { _ in
        try ThreadServices(settings: settings, mongo: mongo, emailQueue: accounts.emailQueue, sessionTTL: accounts.sessionTTL)
    }
    var router = Router()
    SystemRoutes.register(&router)
    AccountRoutes(settings: accounts).register(&router)
    RoomRoutes().register(&router)
    MessageRoutes(sendLimit: .init(name: "send", limit: try config.int("RATE_LIMIT_SENDS_PER_USER", default: 200),
                                   windowSeconds: try config.int("RATE_LIMIT_SENDS_WINDOW_SECONDS", default: 10)),
                  slowSendMs: Double(try config.int("SLOW_SEND_LOG_MS", default: 1000))).register(&router)
    let app = APIApplication(router: router, services: services)

    let prepare = Thread {
        Startup.prepareDatabases(settings: settings, mongo: mongo, migrationsDir: migrationsDir, logger: logger)
    }
    prepare.name = "startup"
    prepare.start()

    logger.info("fcgiapp listening", metadata: ["socket": "\(socketPath)", "threads": "\(threads)", "pid": "\(getpid())"])
    let server = FastCGIServer(socketPath: socketPath, threads: threads, socketMode: socketMode)
    try server.run(handler: { thread, request in app.handle(thread: thread, request) },
                   onShutdown: { logger.info("shutting down: finishing requests in flight") })
    logger.info("fcgiapp stopped")
} catch {
    logger.critical("fcgiapp cannot start", metadata: ["error": "\(error)"])
    exit(1)
}
