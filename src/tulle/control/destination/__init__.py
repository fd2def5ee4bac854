"""The Destination service: watchers -> translators -> streams with bounded queues.

- `watcher`: turns source-of-truth snapshots into one publisher per watched
  authority; publishing never blocks.
- `translator`: one per stream; diffs what the stream already sent against the
  new state and queues protobuf messages in a bounded queue.
- `service`: the gRPC servicer; drains each stream's queue, ends the stream
  when its queue overflows (the client resubscribes and gets a snapshot).
"""
