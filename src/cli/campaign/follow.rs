//! `avvisi campaign launch --wait`: follows a launched campaign until it is finished or
//! cancelled: a progress bar on a terminal, a plain line every few seconds otherwise.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration as StdDuration, Instant};

use chrono_tz::Tz;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::App;
use crate::cli::local;
use crate::store::{CampaignState, Counts};

/// Follows a launched campaign until it is finished or cancelled.
pub(crate) async fn follow(app: &App, name: &str, tz: Tz) -> anyhow::Result<ExitCode> {
    const PLAIN_EVERY: StdDuration = StdDuration::from_secs(5);
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(StdDuration::from_millis(200));
        bar
    });
    let say = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    };
    // Recent (time, sent) samples: the rate is over the last RATE_WINDOW, not since launch.
    const RATE_WINDOW: StdDuration = StdDuration::from_secs(30);
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut last_state: Option<CampaignState> = None;
    let mut last_line: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let c = app.campaign_progress(name).await?;
        let (state, p) = (c.state, c.messages);
        let now = Instant::now();
        samples.push_back((now, p.sent));
        while samples.len() > 2 && now.duration_since(samples[0].0) > RATE_WINDOW {
            samples.pop_front();
        }
        let (t0, sent0) = samples[0];
        let span = now.duration_since(t0).as_secs_f64();
        let rate = if span >= 1.0 {
            p.sent.saturating_sub(sent0) as f64 / span
        } else {
            0.0
        };
        let changed = Some(state) != last_state;
        if changed {
            match state {
                CampaignState::Paused => say(format!(
                    "campaign {} is paused: nothing is sent until `avvisi campaign resume {}` (still waiting)",
                    c.name, c.name
                )),
                CampaignState::Scheduled => say(format!(
                    "campaign {} is scheduled for {}: waiting",
                    c.name,
                    local(c.send_at, tz)
                )),
                CampaignState::Running if last_state.is_some() => {
                    say(format!("campaign {} is running", c.name))
                }
                _ => {}
            }
            last_state = Some(state);
        }
        let line = progress_line(&p, rate, state);
        match &bar {
            Some(bar) => {
                bar.set_length(p.total());
                bar.set_position(p.done());
                bar.set_message(line.clone());
            }
            None => {
                if changed || last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    println!("{line}");
                    last_line = Some(Instant::now());
                }
            }
        }
        if state.is_final() {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            println!(
                "campaign {} {}: sent {}, skipped {}, failed {}, expired {} (of {} planned)",
                c.name,
                if state == CampaignState::Finished {
                    "finished"
                } else {
                    "was cancelled"
                },
                p.sent,
                p.skipped,
                p.failed,
                p.expired,
                p.total()
            );
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_secs(1)) => {}
            _ = &mut ctrl_c => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                println!(
                    "stopped following campaign {}: it goes on in the daemon (`avvisi campaign show {}`)",
                    c.name, c.name
                );
                return Ok(ExitCode::from(130));
            }
        }
    }
}

/// "sent N/TOTAL, R msg/s, about T left", and the state when it is not running.
fn progress_line(p: &Counts, rate: f64, state: CampaignState) -> String {
    let left = if p.total() == 0 {
        "time left unknown".to_string()
    } else if p.open() == 0 {
        "nothing left".to_string()
    } else if rate > 0.0 {
        format!("about {} left", human_duration(p.open() as f64 / rate))
    } else {
        "time left unknown".to_string()
    };
    let mut line = format!("sent {}/{}, {rate:.1} msg/s, {left}", p.sent, p.total());
    if p.skipped + p.failed + p.expired > 0 {
        line.push_str(&format!(
            " (skipped {}, failed {}, expired {})",
            p.skipped, p.failed, p.expired
        ));
    }
    match state {
        CampaignState::Running if p.total() == 0 => {
            line.push_str(" [waiting for the daemon to plan it]")
        }
        CampaignState::Running => {}
        other => line.push_str(&format!(" [{other}]")),
    }
    line
}

fn human_duration(secs: f64) -> String {
    let s = secs.ceil() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}
