"""The SSH side of the data path: a jump host that terminates every connection it relays.

`server` is the asyncssh server callers reach (`ssh -J alice@gateway web1`, or
`ssh alice+web1@gateway`, or `ssh alice@gateway` for the `menu`); `link` is one caller's
connection to one target, owning the upstream login (`upstream`) and its gateway session
(`proxy.session`: the recording); `channels` bridges each session channel (shell, exec, sftp)
between the two and hands every byte to the recording, masking what is printed through
`output_masking`; `forwarding` does the same for permitted TCP forwards; `menu` lists a
caller's targets and bridges to the one picked; `sftp` reads the SFTP packets crossing a
bridge (sans-IO) to record file operations; `login` splits login names;
`hostkeys` holds the gateway's host CA and signs the per-target host certificates callers trust
with one `@cert-authority` line; `gateway` starts and stops it all.

Around the bridge: `strict` is strict shell mode (the gateway edits the line, each line its own
exec); `file_gate` judges SFTP file operations before the target sees them; `scp` and
`transfers` read scp streams and tell file transfers from text (sans-IO); `agent` forwards the
caller's ssh agent to targets that allow it; `console_pty` runs the workstation for a remote
approver (`ssh -t bob@gateway console`); `corking` makes SSH writes cheaper.

Where it sits: one of the two protocol packages of `proxy`. Command inspection plugs in through
`channels.ChannelInspector` (`proxy.inspection`: exec requests, and a shell gate for PTY
shells), verdicts are carried out by `proxy.holds`; this package never imports Textual.
"""
