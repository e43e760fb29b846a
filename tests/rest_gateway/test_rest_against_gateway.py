"""Every REST and grpcurl test of tests/rest that needs no stub, on the real services."""

from __future__ import annotations

from tests.rest.test_errors import (  # noqa: F401 - collected by pytest
    test_a_body_that_breaks_the_contract_is_400,
    test_a_malformed_path_parameter_is_400_naming_the_field,
    test_a_malformed_user_is_400_with_the_shared_rule_message,
    test_a_route_with_the_wrong_verb_is_404,
    test_a_user_without_a_bundle_is_404,
    test_an_error_in_a_stream_before_its_first_message_is_an_http_error,
    test_an_unknown_path_is_404,
    test_an_unknown_query_parameter_is_400,
    test_malformed_json_is_400,
    test_not_found_is_404_with_a_status_body,
)
from tests.rest.test_grpcurl import (  # noqa: F401
    test_describe_shows_the_contract,
    test_errors_exit_with_64_plus_the_grpc_code,
    test_grpc_passes_through_envoy_unchanged,
    test_health_check,
    test_list_shows_the_services_health_and_reflection,
    test_refresh_then_watch_to_the_final_message,
)
from tests.rest.test_routes import (  # noqa: F401
    test_a_schedule_is_set_read_and_deleted,
    test_download_returns_the_raw_bundle_with_its_content_type,
    test_every_rpc_answers_at_its_path,
    test_int64_fields_are_strings,
    test_json_is_camel_case_with_enum_names_and_defaults,
    test_path_and_body_fields_both_reach_the_request,
    test_the_admin_plane_has_no_public_route,
    test_the_durable_functions_paths_refresh_and_report_k_of_n,
)
from tests.rest.test_streaming import (  # noqa: F401
    test_one_message_per_line_with_trailers_ok,
    test_watch_of_an_ended_job_replays_its_state_as_the_final_line,
    test_watch_streams_ndjson_that_ends_with_a_final_line,
)
