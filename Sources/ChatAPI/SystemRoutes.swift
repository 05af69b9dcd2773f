import Foundation
import ChatCore

/// Routes that do not belong to a domain: health and the trivial benchmark route.
public enum SystemRoutes {
    struct Pong: Encodable { let pong = true }

    public static func register(_ router: inout Router) {
        router.add("GET", "/api/health", auth: .none) { ctx in
            let report = HealthReport.measure(ctx.services)
            if report.down.isEmpty { return .json(report) }
            // 503 with the error envelope naming what is down, plus every check.
            struct Body: Encodable {
                struct Err: Encodable { let code: String; let message: String }
                let error: Err
                let status: String
                let dependencies: [String: HealthReport.Check]
                let down: [String]
            }
            let names = report.down.joined(separator: ", ")
            let body = Body(error: .init(code: "dependency_unavailable", message: "Unavailable: \(names) \(report.down.count == 1 ? "is" : "are") down."),
                            status: report.status, dependencies: report.dependencies, down: report.down)
            var reply = HTTPReply.json(body, status: 503)
            reply.headers.append(("Retry-After", "5"))
            return reply
        }
        // Touches no dependency and encodes nothing: the baseline for the FastCGI path's own cost.
        let pong = JSON.encode(Pong())
        router.add("GET", "/api/ping", auth: .none) { _ in .rawJSON(pong) }
    }
}
