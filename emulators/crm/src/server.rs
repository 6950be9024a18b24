//! Serving an emulator's router until it is shut down: what every emulator shares.

use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `app` on `listener` in a background task.
    pub(crate) fn spawn(listener: TcpListener, app: Router, name: &'static str) -> Server {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::warn!("{name} emulator stopped: {e}");
            }
        });
        Server {
            stop: Some(stop),
            task,
        }
    }

    /// Stops serving; keep-alive connections still open after two seconds are cut.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}
