//! The contract between the NodeTask custom resource (`opsplane-resources`) and the task
//! runner a NodeTask watcher will call: every handler/command pair the CRD accepts, with data
//! shaped as the CRD holds it (`TaskData` serialized), parses with `TaskRequest::from_parts`
//! into the same handler and command, and a command is refused by a node-daemon with the default
//! (safe) configuration exactly when the resource calls it disruptive.

use opsplane_node_daemon::task::{TaskRequest, TaskSettings};
use opsplane_resources::node_task::{TaskCommand, TaskData, TaskHandler};

fn name<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("a string enum")
}

fn data_for(command: TaskCommand) -> TaskData {
    use TaskCommand::*;
    let s = |v: &str| Some(v.to_owned());
    let mut d = TaskData::default();
    match command {
        SetupShutdown | ModifyShutdown => {
            d.task_name = s("night1");
            d.exec_hour = s("3");
            d.exec_minute = s("55");
            d.exec_weekly = s("1,2,7");
        }
        DeleteShutdown | SelectShutdown => d.task_name = s("night1"),
        Start | Stop | Restart | Enable | Disable => {
            d.service = Some(vec!["libvirtd".into(), "sshd.service".into()])
        }
        Update => {
            d.addr = s("http://10.0.0.1:8080/");
            d.node_uuid = s("4c4c4544-0042");
        }
        DeleteFile => d.file_name = s("/var/tmp/opsplane/old.log"),
        AddIp | UpdateIp => {
            d.name = s("eth0:1");
            d.ip = s("172.16.1.34");
            d.netmask = s("255.255.255.0");
            d.gateway = s("172.16.1.254");
            d.dns1 = s("8.8.8.8");
            d.dns2 = s("");
        }
        DeleteIp => d.name = s("eth0:1"),
        ExchangeIp => {
            d.name1 = s("eth0");
            d.name2 = s("eth0:1");
        }
        Shutdown | Reboot | Pause | Resume => {}
    }
    d
}

#[test]
fn every_crd_handler_and_command_parses_into_the_same_task_and_disruptive_ones_are_refused_by_default()
 {
    let handlers = [
        TaskHandler::CrontabHandler,
        TaskHandler::OsHandler,
        TaskHandler::ServiceHandler,
        TaskHandler::TimerHandler,
        TaskHandler::FileHandler,
        TaskHandler::NetworkHandler,
    ];
    let safe = TaskSettings::new("/", "/nonexistent");
    let mut seen = 0;
    for handler in handlers {
        for command in handler.commands() {
            let data = serde_json::to_value(data_for(*command)).unwrap();
            let (h, c) = (name(handler), name(*command));
            let request = TaskRequest::from_parts(&h, &c, &data)
                .unwrap_or_else(|e| panic!("{h} {c} {data}: {e}"));
            assert_eq!(
                (request.handler(), request.command()),
                (h.as_str(), c.as_str())
            );
            if command.is_disruptive() {
                let refusal = request
                    .permission(&safe)
                    .expect_err(&format!("{h} {c} allowed by default"));
                assert_eq!(refusal.code(), 30004);
            } else {
                // The converse: what the resource does not call disruptive (and so releases on
                // every node at once) runs on a daemon with the default configuration.
                request.permission(&safe).unwrap_or_else(|e| {
                    panic!("{h} {c} is not disruptive for the operator but refused by default: {e}")
                });
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 19, "every seed command of every handler");
}
