import Foundation
import ChatCore

/// Sends `tasks.email` tasks over SMTP with libcurl.
struct EmailSender {
    let settings: ServiceSettings

    func handle(_ delivery: AMQPDelivery) -> TaskOutcome {
        guard let task = try? JSONDecoder().decode(EmailTask.self, from: Data(delivery.body)) else {
            return .fail("malformed email task")
        }
        let recipient = MailMessage.address(task.to)
        guard recipient.contains("@"), !recipient.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "<" || $0 == ">" }) else {
            return .fail("invalid recipient")
        }
        guard let rendered = EmailTemplates.render(task, publicURL: settings.publicURL) else {
            return .fail("malformed email task")
        }
        let host = URLComponents(string: settings.publicURL)?.host ?? "localhost"
        let message = MailMessage(from: settings.smtpFrom, to: task.to, subject: rendered.subject, text: rendered.text,
                                  html: rendered.html, messageID: "\(task.id)@\(host)")
        do {
            try Curl.sendMail(url: settings.smtpURL, from: MailMessage.address(settings.smtpFrom), to: [recipient],
                              message: message.rfc5322(), user: settings.smtpUser, password: settings.smtpPassword)
            return .done
        } catch let e as CurlError {
            // Retried even when permanent-looking: a 5xx can come from a misconfigured relay
            // that an operator fixes; after the last attempt it lands in the dead letters.
            return .retry(e.isPermanentSMTPFailure ? "smtp refused: \(e.responseCode)" : "smtp: \(e.message)")
        } catch {
            return .retry("smtp: \(error)")
        }
    }
}
