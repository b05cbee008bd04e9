//! The fleet tests of `fleet` again, with the scheduler and workers on Kafka
//! (`--broker kafka://…`, the broker of `KAFKA_BROKERS`) and no RabbitMQ at all.

use taskfleet_tests::kafka::url;

use crate::fleet;

#[test]
fn on_kafka_a_scheduler_and_three_workers_run_a_1000_task_dag() {
    fleet::three_workers_run_a_1000_task_dag(&url());
}

#[test]
fn on_kafka_a_high_priority_task_overtakes_queued_low_ones() {
    fleet::high_priority_overtakes_queued_low_ones(&url());
}

#[test]
fn on_kafka_a_worker_killed_mid_run_loses_nothing_and_each_task_is_recorded_once() {
    fleet::killed_worker_loses_nothing(&url());
}

#[test]
fn on_kafka_a_worker_joining_mid_run_takes_work_and_nothing_is_lost_or_recorded_twice() {
    fleet::worker_joining_mid_run(&url());
}

#[tokio::test(flavor = "multi_thread")]
async fn on_kafka_garbage_on_the_queues_is_dead_lettered_while_work_goes_on() {
    fleet::garbage_is_dead_lettered_while_work_goes_on(&url()).await;
}
