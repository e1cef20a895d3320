//! `cores.pinned`: each core's executor thread is pinned to a CPU of its own, or, with
//! `cores.pinned=false`, may run on any CPU. Its own test binary: it looks at every thread
//! of the process named like a core.

mod common;

use common::Broker;

/// CPUs each executor's threads (`gregor-core-N-ID`: the executor and glommio's blocking
/// thread beside it) may run on, from /proc; one entry per distinct name and CPU list.
fn core_thread_cpus() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if !name.starts_with("gregor-core-") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        found.push((name.trim().to_string(), cpus));
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn executors_are_pinned_unless_told_not_to() {
    let online = std::thread::available_parallelism().unwrap().get();
    let all_cpus = core_thread_cpus_of_this_process();
    assert!(
        online >= 2,
        "this test needs 2 CPUs to tell pinned from free (has {online})"
    );

    let broker = Broker::start(&[("cores", "2")]);
    let pinned = core_thread_cpus();
    // One CPU list per executor: its threads agree.
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    let cpus: Vec<&str> = pinned.iter().map(|(_, c)| c.as_str()).collect();
    for c in &cpus {
        assert!(
            c.parse::<usize>().is_ok(),
            "not pinned to one CPU: {pinned:?}"
        );
    }
    assert_ne!(cpus[0], cpus[1], "two cores on one CPU: {pinned:?}");
    drop(broker);

    let broker = Broker::start(&[("cores", "2"), ("cores.pinned", "false")]);
    // Glommio numbers executors anew, so the first broker's threads, if any linger, are
    // told apart by name.
    let free: Vec<_> = core_thread_cpus()
        .into_iter()
        .filter(|(name, _)| !pinned.iter().any(|(n, _)| n == name))
        .collect();
    assert_eq!(free.len(), 2, "{free:?}");
    for (_, c) in &free {
        assert_eq!(c, &all_cpus, "an unpinned executor is limited: {free:?}");
    }
    drop(broker);
}

/// The CPUs this process may use (what an unpinned thread inherits).
fn core_thread_cpus_of_this_process() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}
