//! `agora-notification`: the notification service on its own, configured by flags and environment.

fn main() -> std::process::ExitCode {
    agora_interceptors::binary::main::<agora_notification::NotificationConfig>()
}
