// FCGIApp: the REST API as a FastCGI pool process behind nginx. Threads share one
// listening socket and take whichever kept nginx connection is readable (FastCGIServer);
// every thread owns its own database and broker connections. Run several processes
// (systemd template units) behind one nginx upstream.
import Foundation
import Logging
import ChatCore
import ChatAPI

ShutdownSignal.block()
PostgresConnection.nameConnections("fcgiapp")
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
    // Every pooled MongoDB client connected now rather than by the first requests (the
    // request threads open their own connections in perThreadStart below).
    // Then it keeps them from going idle: a pooled connection unused for minutes may be
    // dropped by the server or a firewall, and only its next request would find out.
    let mongoKeepAlive = try config.int("MONGO_KEEPALIVE_SECONDS", default: 60)
    let warmMongo = Thread {
        let ready = mongo.warmUp(clients: threads)
        logger.debug("mongodb clients connected at start", metadata: ["clients": "\(ready)"])
        while mongoKeepAlive > 0 {
            Thread.sleep(forTimeInterval: Double(mongoKeepAlive))
            mongo.pingIdleClients()
        }
    }
    warmMongo.name = "mongo-keepalive"
    warmMongo.start()

    logger.info("fcgiapp listening", metadata: ["socket": "\(socketPath)", "threads": "\(threads)", "pid": "\(getpid())"])
    // FastCGI connections fit in the descriptor limit beside each thread's database and
    // broker connections (and the MongoDB pool's): past it, accept fails with EMFILE.
    var maxConnections = try config.int("FCGI_MAX_CONNECTIONS", default: 1024)
    var files = rlimit()
    if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &files) == 0 {
        let room = Int(files.rlim_cur) - 64 - 5 * threads
        if maxConnections > room {
            logger.warning("FCGI_MAX_CONNECTIONS lowered to fit the open-files limit",
                           metadata: ["configured": "\(maxConnections)", "used": "\(max(1, room))",
                                      "limit": "\(files.rlim_cur)"])
            maxConnections = max(1, room)
        }
    }
    let server = FastCGIServer(socketPath: socketPath, threads: threads, socketMode: socketMode,
                               maxConnections: maxConnections,
                               ioTimeoutSeconds: try config.int("FCGI_IO_TIMEOUT_SECONDS", default: 30))
    try server.run(handler: { thread, request in app.handle(thread: thread, request) },
                   perThreadStart: { thread in
                       // Connections opened before the thread serves; a dependency that is
                       // down is left for requests to report (the startup thread logs it).
                       let down = services[thread].warmUp()
                       if thread == 0, !down.isEmpty {
                           logger.debug("not reachable at start", metadata: ["dependencies": "\(down.map(\.rawValue))"])
                       }
                   },
                   onShutdown: { logger.info("shutting down: finishing requests in flight") })
    logger.info("fcgiapp stopped")
} catch {
    logger.critical("fcgiapp cannot start", metadata: ["error": "\(error)"])
    exit(1)
}
