//! Fleet-wide dispatch: `pause` and `resume`.

use crate::client::{CliResult, ConnArgs};
use muster_proto::api::StatusView;

/// `muster pause` / `muster resume`: all dispatch; runs under way go on.
pub(crate) async fn pause(conn: &ConnArgs, pause: bool) -> CliResult {
    let client = conn.client()?;
    let path = if pause { "/admin/pause" } else { "/admin/resume" };
    let _: StatusView = client.post(path, &()).await?;
    if pause {
        eprintln!("dispatch paused: no task is handed out until `muster resume`; runs under way go on");
    } else {
        eprintln!("dispatch resumed");
    }
    Ok(())
}
