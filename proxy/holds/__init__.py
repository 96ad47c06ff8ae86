"""Held commands and access grants, in one home.

Where it sits: between the data path and the people who decide. A protocol layer (SSH exec,
a shell line, a SQL statement) gets a verdict from `proxy.policy` and hands it to
`enforcement.Enforcer`; a REVIEW verdict becomes a hold that waits in `service.ApprovalService`
until approvers decide through the control socket (`control`, its operations in `api`, where
holds and grants become JSON), the line console (`console`) or the workstation. `broker` holds
the rules (who may decide, how many approvals, expiry); the state it keeps goes through a
`storage.state.StateStore`.

    enforcement -> service -> broker -> storage.state (StateStore)
                      |
                   control  <- console, workstation, `hoop-tui approve`

Importing this package loads nothing else: the command line imports `proxy.holds.control`
alone to start quickly.
"""
