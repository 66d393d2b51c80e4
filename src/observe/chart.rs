//! Sends per hour as an SVG bar chart (plotters, its SVG backend): one bar per hour, labelled
//! in the calendar's time zone. Text is left to the browser's fonts, so no font library is
//! linked.

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Tz;
use plotters::prelude::*;

use crate::store::queue::HourlySends;

/// Chart size in SVG units; the page scales it to the screen's width.
const SIZE: (u32, u32) = (900, 300);

/// An SVG chart of `sends`, one bar per hour from the hour of `from` to the hour of `to`
/// (hours without sends drawn empty). `None` when plotters fails (never expected: an empty
/// chart is still a chart).
pub fn sends_per_hour(
    sends: &[HourlySends],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: Tz,
) -> Option<String> {
    let start = hour_of(from);
    let hours = ((hour_of(to) - start).num_hours() + 1).clamp(1, 24 * 62);
    let mut per_hour = vec![0u64; hours as usize];
    for s in sends {
        let i = (s.hour - start).num_hours();
        if (0..hours).contains(&i) {
            per_hour[i as usize] += s.sent;
        }
    }
    let top = per_hour.iter().copied().max().unwrap_or(0).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0..hours).into_segmented(), 0u64..top + top / 10 + 1)
            .ok()?;
        let label = |v: &SegmentValue<i64>| match v {
            SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => {
                let at = (start + Duration::hours(*i)).with_timezone(&tz);
                // Over more than a day the labels skip hours: each says its day.
                if hours > 24 || at.hour() == 0 || *i == 0 {
                    at.format("%d/%m %H:00").to_string()
                } else {
                    at.format("%H:00").to_string()
                }
            }
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(12.min(hours as usize))
            .x_label_formatter(&label)
            .y_desc("messaggi inviati")
            .x_desc(format!("ora ({tz})"))
            .draw()
            .ok()?;
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(RGBColor(0x1f, 0x6f, 0xb2).filled())
                    .margin(1)
                    .data(per_hour.iter().enumerate().map(|(i, n)| (i as i64, *n))),
            )
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_hour_with_local_labels() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let sends = [
            HourlySends {
                hour: at("2026-11-23T09:00:00Z"),
                sent: 40,
            },
            HourlySends {
                hour: at("2026-11-23T11:00:00Z"),
                sent: 7,
            },
        ];
        let svg = sends_per_hour(
            &sends,
            at("2026-11-23T08:30:00Z"),
            at("2026-11-23T12:10:00Z"),
            chrono_tz::Europe::Rome,
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        // 08:00 UTC is 09:00 in Rome; five hours, five bars (empty ones included).
        assert!(svg.contains("23/11 09:00"), "{svg}");
        assert!(svg.contains("messaggi inviati"));
        assert!(svg.matches("<rect").count() >= 5, "{svg}");
    }
}
