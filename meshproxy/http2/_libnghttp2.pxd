# cython: language_level=3
"""C declarations of the part of libnghttp2 (>= 1.52, Debian 12) that ``_codec_c`` uses.

Only the struct members the codec reads are declared; Cython reaches them by name, so the
layout stays the header's. No code of its own.
"""

from libc.stdint cimport int32_t, uint8_t, uint32_t


cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_session:
        pass
    ctypedef struct nghttp2_session_callbacks:
        pass
    ctypedef struct nghttp2_option:
        pass
    ctypedef struct nghttp2_priority_spec:
        pass

    enum:
        NGHTTP2_ERR_DEFERRED
        NGHTTP2_ERR_CALLBACK_FAILURE
        NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        NGHTTP2_ERR_HTTP_HEADER
        NGHTTP2_ERR_HTTP_MESSAGING
        NGHTTP2_FLAG_NONE
        NGHTTP2_FLAG_END_STREAM
        NGHTTP2_FLAG_ACK
        NGHTTP2_NV_FLAG_NONE
        NGHTTP2_NV_FLAG_NO_INDEX
        NGHTTP2_DATA_FLAG_EOF
        NGHTTP2_DATA_FLAG_NO_END_STREAM
        NGHTTP2_DATA
        NGHTTP2_HEADERS
        NGHTTP2_RST_STREAM
        NGHTTP2_SETTINGS
        NGHTTP2_PING
        NGHTTP2_GOAWAY
        NGHTTP2_WINDOW_UPDATE
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_RESPONSE
        NGHTTP2_HCAT_HEADERS
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        NGHTTP2_SETTINGS_MAX_FRAME_SIZE
        NGHTTP2_PROTOCOL_ERROR
        NGHTTP2_ENHANCE_YOUR_CALM

    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags

    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        int cat

    ctypedef struct nghttp2_rst_stream:
        nghttp2_frame_hd hd
        uint32_t error_code

    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value

    ctypedef struct nghttp2_settings:
        nghttp2_frame_hd hd
        size_t niv
        nghttp2_settings_entry* iv

    ctypedef struct nghttp2_ping:
        nghttp2_frame_hd hd
        uint8_t opaque_data[8]

    ctypedef struct nghttp2_goaway:
        nghttp2_frame_hd hd
        int32_t last_stream_id
        uint32_t error_code
        uint8_t* opaque_data
        size_t opaque_data_len

    ctypedef struct nghttp2_window_update:
        nghttp2_frame_hd hd
        int32_t window_size_increment

    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
        nghttp2_rst_stream rst_stream
        nghttp2_settings settings
        nghttp2_ping ping
        nghttp2_goaway goaway
        nghttp2_window_update window_update

    ctypedef struct nghttp2_nv:
        uint8_t* name
        uint8_t* value
        size_t namelen
        size_t valuelen
        uint8_t flags

    ctypedef union nghttp2_data_source:
        int fd
        void* ptr

    ctypedef ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*, nghttp2_data_source*, void*
    )

    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback

    ctypedef int (*nghttp2_on_frame_recv_callback)(nghttp2_session*, const nghttp2_frame*, void*)
    ctypedef int (*nghttp2_on_frame_send_callback)(nghttp2_session*, const nghttp2_frame*, void*)
    ctypedef int (*nghttp2_on_begin_headers_callback)(nghttp2_session*, const nghttp2_frame*, void*)
    ctypedef int (*nghttp2_on_header_callback)(
        nghttp2_session*, const nghttp2_frame*, const uint8_t*, size_t, const uint8_t*, size_t, uint8_t, void*
    )
    ctypedef int (*nghttp2_on_data_chunk_recv_callback)(
        nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t, void*
    )
    ctypedef int (*nghttp2_on_stream_close_callback)(nghttp2_session*, int32_t, uint32_t, void*)
    ctypedef int (*nghttp2_on_invalid_frame_recv_callback)(nghttp2_session*, const nghttp2_frame*, int, void*)

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks** callbacks_ptr)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks* callbacks)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(nghttp2_session_callbacks*, nghttp2_on_frame_recv_callback)
    void nghttp2_session_callbacks_set_on_frame_send_callback(nghttp2_session_callbacks*, nghttp2_on_frame_send_callback)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(nghttp2_session_callbacks*, nghttp2_on_begin_headers_callback)
    void nghttp2_session_callbacks_set_on_header_callback(nghttp2_session_callbacks*, nghttp2_on_header_callback)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(nghttp2_session_callbacks*, nghttp2_on_data_chunk_recv_callback)
    void nghttp2_session_callbacks_set_on_stream_close_callback(nghttp2_session_callbacks*, nghttp2_on_stream_close_callback)
    void nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(nghttp2_session_callbacks*, nghttp2_on_invalid_frame_recv_callback)

    int nghttp2_option_new(nghttp2_option** option_ptr)
    void nghttp2_option_del(nghttp2_option* option)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option* option, int val)

    int nghttp2_session_server_new2(nghttp2_session**, const nghttp2_session_callbacks*, void*, const nghttp2_option*)
    int nghttp2_session_client_new2(nghttp2_session**, const nghttp2_session_callbacks*, void*, const nghttp2_option*)
    void nghttp2_session_del(nghttp2_session* session)

    ssize_t nghttp2_session_mem_recv(nghttp2_session*, const uint8_t* data, size_t length)
    ssize_t nghttp2_session_mem_send(nghttp2_session*, const uint8_t** data_ptr)
    int nghttp2_session_resume_data(nghttp2_session*, int32_t stream_id)
    int nghttp2_session_consume(nghttp2_session*, int32_t stream_id, size_t size)
    int nghttp2_session_terminate_session2(nghttp2_session*, int32_t last_stream_id, uint32_t error_code)
    int32_t nghttp2_session_get_stream_remote_window_size(nghttp2_session*, int32_t stream_id)
    int32_t nghttp2_session_get_remote_window_size(nghttp2_session*)
    int32_t nghttp2_session_get_local_window_size(nghttp2_session*)
    uint32_t nghttp2_session_get_remote_settings(nghttp2_session*, int id)
    uint32_t nghttp2_session_get_next_stream_id(nghttp2_session*)

    int nghttp2_submit_settings(nghttp2_session*, uint8_t flags, const nghttp2_settings_entry* iv, size_t niv)
    int nghttp2_submit_response(nghttp2_session*, int32_t stream_id, const nghttp2_nv* nva, size_t nvlen, const nghttp2_data_provider* data_prd)
    int32_t nghttp2_submit_request(nghttp2_session*, const nghttp2_priority_spec* pri_spec, const nghttp2_nv* nva, size_t nvlen, const nghttp2_data_provider* data_prd, void* stream_user_data)
    int32_t nghttp2_submit_headers(nghttp2_session*, uint8_t flags, int32_t stream_id, const nghttp2_priority_spec* pri_spec, const nghttp2_nv* nva, size_t nvlen, void* stream_user_data)
    int nghttp2_submit_trailer(nghttp2_session*, int32_t stream_id, const nghttp2_nv* nva, size_t nvlen)
    int nghttp2_submit_rst_stream(nghttp2_session*, uint8_t flags, int32_t stream_id, uint32_t error_code)
    int nghttp2_submit_window_update(nghttp2_session*, uint8_t flags, int32_t stream_id, int32_t window_size_increment)

    const char* nghttp2_strerror(int lib_error_code)
