use std::collections::BTreeMap;

use taskfleet_common::resources::ResourceSet;
use taskfleet_common::workflow::Resources;
use taskfleet_common::PriorityClass;

use super::*;
use crate::placement::WorkerModel;
use crate::policy::TaskRef;

const GI: u64 = 1 << 30;

fn worker(name: &str, slots: u32, cpu: f64, memory_gi: u64, gpu: u32) -> WorkerModel {
    WorkerModel::new(name, &["default"], slots, 1.0).with_capacity(ResourceSet {
        cpu,
        memory_bytes: memory_gi * GI,
        gpu,
        custom: BTreeMap::new(),
    })
}

fn resources(cpu: f64, memory_gi: u64, gpu: u32) -> Resources {
    Resources {
        cpu,
        memory: memory_gi * GI,
        gpu,
        ..Resources::default()
    }
}

const NONE: &BTreeMap<String, String> = &BTreeMap::new();

fn ask<'a>(resources: &'a Resources, class: PriorityClass) -> Ask<'a> {
    Ask {
        pool: "default",
        resources,
        selector: NONE,
        prefer: NONE,
        class,
        tenant: None,
    }
}

fn task(i: u32) -> TaskRef {
    TaskRef::new(0, i)
}

fn place(bins: &mut Bins, i: u32, ask: &Ask<'_>) -> Result<Placed, Unplaced> {
    let placed = bins.choose(ask)?;
    bins.hold(task(i), &placed.worker, placed.lent, ask);
    Ok(placed)
}

#[test]
fn a_task_goes_only_where_every_part_of_its_request_fits() {
    let mut bins = Bins::new(PackingKind::FirstFit, &[]);
    bins.set_workers(&[worker("a-small", 4, 2.0, 4, 0), worker("b-big", 4, 16.0, 64, 1)]);
    let big = resources(4.0, 32, 0);
    assert_eq!(
        &*bins.choose(&ask(&big, PriorityClass::Normal)).unwrap().worker,
        "b-big"
    );
    let gpu = resources(1.0, 1, 1);
    assert_eq!(
        &*place(&mut bins, 1, &ask(&gpu, PriorityClass::Normal)).unwrap().worker,
        "b-big"
    );
    // The only GPU is held: another GPU task waits until it is released.
    assert_eq!(bins.choose(&ask(&gpu, PriorityClass::Normal)), Err(Unplaced::NoRoom));
    bins.release(task(1));
    assert!(bins.choose(&ask(&gpu, PriorityClass::Normal)).is_ok());
}

#[test]
fn first_fit_takes_the_first_by_name_and_best_fit_the_tightest() {
    let fleet = [
        worker("a", 8, 16.0, 64, 0),
        worker("b", 8, 4.0, 8, 0),
        worker("c", 8, 8.0, 16, 0),
    ];
    let request = resources(2.0, 4, 0);
    let mut first = Bins::new(PackingKind::FirstFit, &[]);
    first.set_workers(&fleet);
    assert_eq!(
        &*first.choose(&ask(&request, PriorityClass::Normal)).unwrap().worker,
        "a"
    );
    let mut best = Bins::new(PackingKind::BestFit, &[]);
    best.set_workers(&fleet);
    assert_eq!(
        &*best.choose(&ask(&request, PriorityClass::Normal)).unwrap().worker,
        "b"
    );
    let mut spread = Bins::new(PackingKind::Spread, &[]);
    spread.set_workers(&fleet);
    assert_eq!(
        &*spread.choose(&ask(&request, PriorityClass::Normal)).unwrap().worker,
        "a"
    );
}

#[test]
fn best_fit_packs_small_tasks_so_that_a_large_one_still_finds_an_empty_worker() {
    let fleet = [worker("a", 4, 4.0, 16, 0), worker("b", 4, 4.0, 16, 0)];
    let small = resources(1.0, 2, 0);
    let large = resources(4.0, 16, 0);
    for (packing, large_fits) in [(PackingKind::BestFit, true), (PackingKind::Spread, false)] {
        let mut bins = Bins::new(packing, &[]);
        bins.set_workers(&fleet);
        place(&mut bins, 0, &ask(&small, PriorityClass::Normal)).unwrap();
        place(&mut bins, 1, &ask(&small, PriorityClass::Normal)).unwrap();
        assert_eq!(
            bins.choose(&ask(&large, PriorityClass::Normal)).is_ok(),
            large_fits,
            "{packing}"
        );
    }
}

#[test]
fn slots_custom_resources_and_labels_count_and_preferred_labels_come_first() {
    let mut fleet = vec![
        worker("a", 1, 8.0, 8, 0).with_labels(BTreeMap::from([("zone".to_string(), "a".to_string())])),
        worker("b", 2, 8.0, 8, 0).with_labels(BTreeMap::from([("zone".to_string(), "b".to_string())])),
    ];
    fleet[1]
        .capacity
        .as_mut()
        .unwrap()
        .custom
        .insert("licenses".to_string(), 1.0);
    let mut bins = Bins::new(PackingKind::FirstFit, &[]);
    bins.set_workers(&fleet);
    let licensed = Resources {
        custom: BTreeMap::from([("licenses".to_string(), 1.0)]),
        ..resources(1.0, 1, 0)
    };
    assert_eq!(
        &*place(&mut bins, 0, &ask(&licensed, PriorityClass::Normal))
            .unwrap()
            .worker,
        "b"
    );
    assert_eq!(
        bins.choose(&ask(&licensed, PriorityClass::Normal)),
        Err(Unplaced::NoRoom)
    );
    let plain = resources(1.0, 1, 0);
    let zone_b = BTreeMap::from([("zone".to_string(), "b".to_string())]);
    let prefers_b = Ask {
        prefer: &zone_b,
        ..ask(&plain, PriorityClass::Normal)
    };
    assert_eq!(&*place(&mut bins, 1, &prefers_b).unwrap().worker, "b");
    // b's two slots are held now: the preference gives way, a selector would not.
    assert_eq!(&*bins.choose(&prefers_b).unwrap().worker, "a");
    let selects_b = Ask {
        selector: &zone_b,
        ..ask(&plain, PriorityClass::Normal)
    };
    assert_eq!(bins.choose(&selects_b), Err(Unplaced::NoRoom));
    // A best-effort task reported started holds its slot on a.
    bins.started(task(9), "a", 1);
    assert_eq!(bins.choose(&prefers_b), Err(Unplaced::NoRoom));
    bins.release(task(9));
    bins.release(task(1));
    assert_eq!(bins.used("b").unwrap().0, 1);
}

#[test]
fn reserved_capacity_is_lent_while_idle_and_goes_to_its_owner_once_it_waits() {
    let reservation: Reservation = "high:gpu=50%".parse().unwrap();
    let mut bins = Bins::new(PackingKind::FirstFit, &[reservation]);
    bins.set_workers(&[worker("a", 4, 8.0, 8, 2), worker("b", 4, 8.0, 8, 2)]);
    let gpu = resources(1.0, 1, 1);
    let low = ask(&gpu, PriorityClass::Low);
    // Two of the four GPUs are unreserved; the next two are lent while `high` has nothing waiting.
    assert!(!place(&mut bins, 0, &low).unwrap().lent);
    assert!(!place(&mut bins, 1, &low).unwrap().lent);
    assert!(place(&mut bins, 2, &low).unwrap().lent);
    assert!(bins.is_lent(task(2)));
    // A high task now waits (all GPUs taken but one, which it gets).
    let high = ask(&gpu, PriorityClass::High);
    assert!(!place(&mut bins, 10, &high).unwrap().lent);
    assert_eq!(bins.choose(&high), Err(Unplaced::NoRoom));
    bins.set_waiting([high]);
    // The lent GPU comes back: it goes to high, not to another low task.
    bins.release(task(2));
    assert_eq!(bins.choose(&low), Err(Unplaced::Reserved));
    assert!(place(&mut bins, 11, &high).is_ok());
    bins.set_waiting([]);
    assert_eq!(bins.choose(&low), Err(Unplaced::NoRoom));
}

#[test]
fn a_tenant_reservation_concerns_its_pool_and_tenant_only() {
    let reservation: Reservation = "tenant=acme:memory=8Gi@default".parse().unwrap();
    assert_eq!(
        reservation.to_string(),
        format!("tenant=acme:memory={}@default", 8 * GI)
    );
    let mut bins = Bins::new(PackingKind::FirstFit, &[reservation]);
    bins.set_workers(&[worker("a", 8, 8.0, 16, 0)]);
    let half = resources(1.0, 8, 0);
    let other = ask(&half, PriorityClass::High);
    let acme = Ask {
        tenant: Some("acme"),
        ..ask(&half, PriorityClass::Low)
    };
    bins.set_waiting([acme]);
    assert!(!place(&mut bins, 0, &other).unwrap().lent);
    assert_eq!(bins.choose(&other), Err(Unplaced::Reserved));
    assert!(!place(&mut bins, 1, &acme).unwrap().lent);
}

#[test]
fn reservations_are_read_from_text_and_bad_ones_say_why() {
    let parsed: Reservation = "normal:licenses=2".parse().unwrap();
    assert_eq!(parsed.owner, Owner::Class(PriorityClass::Normal));
    assert_eq!(parsed.amount, Amount::Units(2.0));
    for (text, says) in [
        ("gpu=25%", "OWNER:RESOURCE=AMOUNT"),
        ("urgent:gpu=1", "neither a priority class"),
        ("high:slots=2", "slots are not reserved"),
        ("high:gpu=150%", "at most 100%"),
        ("high:gpu=-1", "positive number"),
        ("high:memory=lots", "memory=lots"),
    ] {
        let error = text.parse::<Reservation>().unwrap_err();
        assert!(error.contains(says), "{text}: {error}");
    }
}

#[test]
fn a_task_asks_when_it_requests_more_than_a_slot_and_a_cpu_or_names_labels() {
    let spec = taskfleet_common::workflow::parse_workflow(
        "name: w\ntasks:\n  - {id: plain, handler: noop}\n  - {id: mem, handler: noop, resources: {memory: 1Gi}}\n  - {id: cpus, handler: noop, resources: {cpu: 2}}\n  - {id: arm, handler: noop, prefer: {arch: arm64}}\n",
        &Default::default(),
    )
    .unwrap();
    let asking: Vec<bool> = spec.tasks.iter().map(asks).collect();
    assert_eq!(asking, [false, true, true, true]);
}
