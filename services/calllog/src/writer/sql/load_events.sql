SELECT e.source_id, e.call_id, event_id, leg_id, kind, direction, from_raw, from_e164, to_raw,
       to_e164, agent_extension, agent_number, agent_email, agent_id, agent_match, contact_ids,
       contact_match, responsible_agent_id, occurred_at, received_at, sequence, disposition,
       hangup_cause, recording_url, recording_id, recording_status, recording_error,
       wrap_up_code, wrap_up_label, wrap_up_note, wrap_up_tags, wrap_up_agent_id, wrap_up_at, queue
FROM call_events e
JOIN UNNEST($1::text[], $2::text[]) AS k(source_id, call_id)
  ON e.source_id = k.source_id AND e.call_id = k.call_id
