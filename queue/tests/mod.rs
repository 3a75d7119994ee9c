//! Unit tests of the queue's state machines, in process and on tokio's
//! paused clock (a wait that nothing ends passes in no real time): dispatcher
//! sessions ([`dispatch`]) and the PAI-EAS queues ([`eas`]).

mod dispatch;
mod eas;
