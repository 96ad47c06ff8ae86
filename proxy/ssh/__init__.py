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

Command inspection plugs in through `channels.ChannelInspector` (exec requests, and a shell gate
for PTY shells); this package never imports Textual.
"""
