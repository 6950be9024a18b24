//! `dataverse-emulator --port N`: runs the emulator with default settings and prints its URLs,
//! for trying crm-sync by hand.

use dataverse_emulator::{Emulator, EmulatorConfig};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| std::io::Error::other("--port needs a number"))?;
            }
            "-h" | "--help" => {
                println!("usage: dataverse-emulator [--port N]");
                return Ok(());
            }
            other => return Err(std::io::Error::other(format!("unknown argument '{other}'"))),
        }
    }
    let cfg = EmulatorConfig::default();
    let (id, secret, tenant) = (
        cfg.client_id.clone(),
        cfg.client_secret.clone(),
        cfg.tenant.clone(),
    );
    let emu = Emulator::start_on(cfg, port).await?;
    println!("base url:  {}", emu.base_url());
    println!("api url:   {}", emu.api_url());
    println!("token url: {}", emu.token_url());
    println!("tenant {tenant}, client id {id}, client secret {secret}");
    println!(
        "rows:      {}/_emulator/rows/account (emulator-only)",
        emu.base_url()
    );
    // Serves until the process is interrupted (tokio's signal feature is not enabled; the
    // default SIGINT action ends the process).
    std::future::pending::<()>().await;
    emu.shutdown().await;
    Ok(())
}
