//! What a stage asks a cluster for, beyond its `threads`: memory, GPUs and a time limit.
//! Set at pipeline level (`resources:`, the defaults) and per stage (`resources:`, key by
//! key overrides). Only cluster executors read them; they never enter a cache key (the
//! same computation gives the same artifact whatever the job was granted).
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The raw YAML mapping (unknown keys rejected; values interpolated per instance).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResources {
    #[serde(default)]
    pub memory: Option<serde_yaml::Value>,
    #[serde(default)]
    pub gpus: Option<serde_yaml::Value>,
    #[serde(default)]
    pub time: Option<serde_yaml::Value>,
}

/// Resolved resources of one instance.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory for the job, in MiB (`--mem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// GPUs (`--gres=gpu:N`); 0 asks for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u64>,
    /// Wall-clock limit in seconds (`--time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_s: Option<u64>,
}

/// `4096` (MiB), `"512M"`, `"4G"`, `"4GB"`, `"1.5GiB"`, `"1T"` → MiB.
pub fn parse_memory(v: &Value) -> Result<u64, String> {
    let bad = || {
        format!(
            "memory must be a size like 4G, 512M or a whole number of MiB, got {}",
            super::interp::display(v)
        )
    };
    let text = match v {
        Value::Number(n) => return n.as_u64().filter(|&n| n > 0).ok_or_else(bad),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(bad()),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches('B').trim_end_matches('I');
    let mib = match unit {
        "K" => num / 1024.0,
        "" | "M" => num,
        "G" => num * 1024.0,
        "T" => num * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let mib = mib.ceil();
    if !(1.0..=1e12).contains(&mib) {
        return Err(bad());
    }
    Ok(mib as u64)
}

/// `2` (GPUs) → 2; a whole number >= 0.
pub fn parse_gpus(v: &Value) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| {
        format!(
            "gpus must be a whole number >= 0, got {}",
            super::interp::display(v)
        )
    })
}

/// A time limit: minutes as a number (`90`), Slurm's forms (`MM:SS`, `HH:MM:SS`,
/// `D-HH`, `D-HH:MM`, `D-HH:MM:SS`) or a number with a unit (`90s`, `30m`, `2h`, `1d`)
/// → seconds.
pub fn parse_time(v: &Value) -> Result<u64, String> {
    let bad = || {
        format!(
            "time must be minutes (90), a duration (30m, 2h, 1d) or Slurm's D-HH:MM:SS, got {}",
            super::interp::display(v)
        )
    };
    let text = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .filter(|&m| m > 0)
                .map(|m| m * 60)
                .ok_or_else(bad)
        }
        Value::String(s) => s.trim().to_string(),
        _ => return Err(bad()),
    };
    let num = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u64>().map_err(|_| bad())
    };
    let secs = if let Some(unit) = text.strip_suffix(['s', 'm', 'h', 'd']) {
        let n = num(unit.trim())?;
        n * match text.as_bytes()[text.len() - 1] {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            _ => 86400,
        }
    } else if let Some((days, rest)) = text.split_once('-') {
        let d = num(days)?;
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() > 3 {
            return Err(bad());
        }
        let mut s = d * 86400;
        for (p, mul) in parts.iter().zip([3600, 60, 1]) {
            s += num(p)? * mul;
        }
        s
    } else {
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            [m] => num(m)? * 60,
            [m, s] => num(m)? * 60 + num(s)?,
            [h, m, s] => num(h)? * 3600 + num(m)? * 60 + num(s)?,
            _ => return Err(bad()),
        }
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(secs)
}

/// Seconds → Slurm's `D-HH:MM:SS`.
pub fn slurm_time(secs: u64) -> String {
    format!(
        "{}-{:02}:{:02}:{:02}",
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One instance's resources: each key from the stage, else from the pipeline's defaults;
/// values interpolated in the instance's scope, then checked.
pub(super) fn instance(
    cx: &super::ctx::Ctx<'_>,
    top: &RawResources,
    stage: &RawResources,
    sp: &str,
    scope: &super::interp::Scope<'_>,
) -> Result<Resources, crate::error::UserError> {
    type Parse = fn(&Value) -> Result<u64, String>;
    let pick = |name: &str,
                st: &Option<serde_yaml::Value>,
                tp: &Option<serde_yaml::Value>,
                parse: Parse|
     -> Result<Option<u64>, crate::error::UserError> {
        let (v, path) = match (st, tp) {
            (Some(v), _) => (v, format!("{sp}.resources.{name}")),
            (None, Some(v)) => (v, format!("resources.{name}")),
            (None, None) => return Ok(None),
        };
        let v = cx.json(&path, v)?;
        let v = scope.apply(&v).map_err(|(_, e)| cx.interp(&path, e))?;
        parse(&v).map(Some).map_err(|m| cx.at_value(&path, m))
    };
    Ok(Resources {
        memory_mib: pick("memory", &stage.memory, &top.memory, parse_memory)?,
        gpus: pick("gpus", &stage.gpus, &top.gpus, parse_gpus)?,
        time_s: pick("time", &stage.time, &top.time, parse_time)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn memory_forms() {
        assert_eq!(parse_memory(&json!(4096)), Ok(4096));
        assert_eq!(parse_memory(&json!("512M")), Ok(512));
        assert_eq!(parse_memory(&json!("4G")), Ok(4096));
        assert_eq!(parse_memory(&json!("4GB")), Ok(4096));
        assert_eq!(parse_memory(&json!("1.5GiB")), Ok(1536));
        assert_eq!(parse_memory(&json!("1t")), Ok(1024 * 1024));
        assert_eq!(parse_memory(&json!("2048K")), Ok(2));
        for bad in [
            json!("lots"),
            json!("4X"),
            json!(0),
            json!(-1),
            json!([1]),
            json!(""),
        ] {
            assert!(parse_memory(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_forms() {
        assert_eq!(parse_time(&json!(90)), Ok(5400));
        assert_eq!(parse_time(&json!("90")), Ok(5400));
        assert_eq!(parse_time(&json!("1:30")), Ok(90));
        assert_eq!(parse_time(&json!("2:00:00")), Ok(7200));
        assert_eq!(parse_time(&json!("1-02")), Ok(86400 + 7200));
        assert_eq!(parse_time(&json!("1-02:03")), Ok(86400 + 7200 + 180));
        assert_eq!(parse_time(&json!("1-02:03:04")), Ok(86400 + 7200 + 184));
        assert_eq!(parse_time(&json!("30m")), Ok(1800));
        assert_eq!(parse_time(&json!("2h")), Ok(7200));
        assert_eq!(parse_time(&json!("1d")), Ok(86400));
        assert_eq!(parse_time(&json!("45s")), Ok(45));
        for bad in [
            json!("soon"),
            json!("1:2:3:4"),
            json!(0),
            json!("0m"),
            json!("h"),
        ] {
            assert!(parse_time(&bad).is_err(), "{bad}");
        }
        assert_eq!(slurm_time(86400 + 7200 + 184), "1-02:03:04");
    }

    #[test]
    fn gpus() {
        assert_eq!(parse_gpus(&json!(0)), Ok(0));
        assert_eq!(parse_gpus(&json!(2)), Ok(2));
        assert!(parse_gpus(&json!(-1)).is_err());
        assert!(parse_gpus(&json!("two")).is_err());
    }
}
